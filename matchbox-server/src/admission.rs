//! Who may join which room: one pure decision from the lobby's settings and the facts of a
//! request, so every refusal (its HTTP status, its reason, its order against the others) is
//! tested without a socket, in the spirit of [`crate::state`]. The plain HTTP endpoints that
//! need credentials are decided here the same way: the admin endpoints ([`admit_admin`]) and
//! TURN credentials ([`admit_turn`], which asks what a join into the room would).
//!
//! The server gathers the facts (path, query, `Origin`, address, connection counts, the clock)
//! and the state they are judged against (rooms, player tokens in use, join rate buckets), and
//! acts on the answer; nothing here does I/O or reads a clock.

use std::net::IpAddr;

use axum::http::StatusCode;
use tokio::time::Instant;

use crate::LobbyConfig;
use crate::auth::{ADMIN_SCOPE, TokenError, TokenLeases, verify_token};
use crate::metrics::Refusal as Reason;
use crate::ratelimit::JoinLimits;
use crate::state::{JoinError, RoomRequest, Rooms};
use crate::uri::{parse_query, room_name};

/// Open connections when a new one arrived, itself not included: the connection limits are
/// decided on these when the TCP connection is accepted, and the same numbers explain the
/// refusal if that connection then asks to join.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Open connections in total.
    pub total: usize,
    /// Open connections from the new connection's IP address.
    pub from_address: usize,
}

/// What the server knows of one WebSocket join request.
#[derive(Debug, Clone, Copy)]
pub struct JoinFacts<'a> {
    /// The URL path: the room name, percent-encoded, after a `/`.
    pub path: &'a str,
    /// The URL query without its `?` (empty if none).
    pub query: &'a str,
    /// The `Origin` header, if the client sent one (browsers do, native clients usually not).
    pub origin: Option<&'a str>,
    /// The client's IP address.
    pub address: IpAddr,
    /// Connections open when this one was accepted.
    pub connections: ConnectionCounts,
    /// Whether the lobby is shutting down.
    pub shutting_down: bool,
    /// Seconds since the Unix epoch: tokens expire against it.
    pub now_unix: u64,
    /// The monotonic clock: join rate buckets refill against it.
    pub now: Instant,
}

/// What the lobby needs to know of a join it admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The room to join.
    pub request: RoomRequest,
    /// A player token's nonce, which the joining connection holds until it leaves.
    pub nonce: Option<String>,
}

/// The lobby's state a join is judged against.
#[derive(Debug)]
pub struct JoinState<'a> {
    /// Who is in which room.
    pub rooms: &'a Rooms,
    /// Player tokens in use.
    pub leases: &'a TokenLeases,
    /// Join rate buckets; an admitted join (and any join attempt, for its address) takes a token.
    pub limits: &'a mut JoinLimits,
}

/// A refused request: what the client is told, and the label it is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The metrics label (`peersync_lobby_refusals_total{reason=…}`).
    pub reason: Reason,
    /// The HTTP status of the response.
    pub status: StatusCode,
    /// The response body: what a person debugging a client needs to read.
    pub message: String,
}

impl Refusal {
    fn new(reason: Reason, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            reason,
            status,
            message: message.into(),
        }
    }
}

/// Whether a new TCP connection fits the connection limits. Decided at accept time so a flood
/// of connections is turned away before any HTTP is parsed; the answer is given (with a status)
/// only if the connection then asks to join.
pub fn check_connections(config: &LobbyConfig, counts: ConnectionCounts) -> Result<(), Refusal> {
    if counts.total >= config.max_connections {
        return Err(Refusal::new(
            Reason::TooManyConnections,
            StatusCode::SERVICE_UNAVAILABLE,
            "the lobby is at its connection limit",
        ));
    }
    if config.max_connections_per_ip != 0 && counts.from_address >= config.max_connections_per_ip {
        return Err(Refusal::new(
            Reason::TooManyFromAddress,
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your address",
        ));
    }
    Ok(())
}

/// Decides a join: the room to put the client in, or why not. Checks run cheapest and most
/// general first, so a client hears about the first thing it must fix. Every attempt counts
/// against its address's join rate (a script retrying bad requests is still churning); only an
/// admitted join counts against its room's.
pub fn admit(
    config: &LobbyConfig,
    facts: &JoinFacts<'_>,
    state: JoinState<'_>,
) -> Result<Admitted, Refusal> {
    check_connections(config, facts.connections)?;
    if facts.shutting_down {
        return Err(Refusal::new(
            Reason::ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "the lobby is shutting down",
        ));
    }
    if !state.limits.per_address.take(&facts.address, facts.now) {
        return Err(Refusal::new(
            Reason::JoinRateAddress,
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many joins from your address (more than {} at once, {}/s after)",
                config.join_burst_per_ip, config.join_rate_per_ip
            ),
        ));
    }
    check_origin(config, facts.origin)?;
    let name = room_name(facts.path)
        .map_err(|message| Refusal::new(Reason::BadRoom, StatusCode::BAD_REQUEST, message))?;
    let query = parse_query(facts.query);
    let next = match query.get("next") {
        None => None,
        Some(value) => match value.parse::<usize>() {
            Ok(n) if (2..=config.max_next).contains(&n) => Some(n),
            _ => {
                return Err(Refusal::new(
                    Reason::BadNext,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "next must be a whole number from 2 to {}, not {value:?}",
                        config.max_next
                    ),
                ));
            }
        },
    };
    let nonce = match &config.secret {
        None => None,
        Some(secret) => check_join_token(
            config,
            secret,
            &name,
            query.get("token").map(String::as_str),
            facts.now_unix,
            state.leases,
        )
        .map_err(|error| {
            let (reason, status) = match error {
                TokenError::Missing => (Reason::MissingToken, StatusCode::UNAUTHORIZED),
                TokenError::Expired => (Reason::ExpiredToken, StatusCode::UNAUTHORIZED),
                TokenError::TooLongLived { .. } => {
                    (Reason::TokenLifetime, StatusCode::UNAUTHORIZED)
                }
                TokenError::NonceRequired => (Reason::TokenNonceRequired, StatusCode::UNAUTHORIZED),
                TokenError::InUse => (Reason::TokenInUse, StatusCode::CONFLICT),
                TokenError::Malformed | TokenError::BadSignature => {
                    (Reason::BadToken, StatusCode::UNAUTHORIZED)
                }
            };
            Refusal::new(reason, status, error.to_string())
        })?,
    };
    let request = RoomRequest { name, next };
    match state.rooms.check_join(&request) {
        Ok(()) => {}
        Err(JoinError::RoomFull { capacity }) => {
            return Err(Refusal::new(
                Reason::RoomFull,
                StatusCode::CONFLICT,
                format!("room {:?} is full ({capacity} peers)", request.name),
            ));
        }
        Err(_) => unreachable!("check_join looks at capacity only"),
    }
    if request.next.is_none() && !state.limits.per_room.take(&request.name, facts.now) {
        return Err(Refusal::new(
            Reason::JoinRateRoom,
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many joins to room {:?} (more than {} at once, {}/s after)",
                request.name, config.join_burst_per_room, config.join_rate_per_room
            ),
        ));
    }
    Ok(Admitted { request, nonce })
}

/// A join token's checks: signature and expiry, then the lobby's policy on lifetime and nonces.
fn check_join_token(
    config: &LobbyConfig,
    secret: &str,
    room: &str,
    token: Option<&str>,
    now_unix: u64,
    leases: &TokenLeases,
) -> Result<Option<String>, TokenError> {
    let verified = check_token_policy(config, secret, room, token, now_unix)?;
    match verified.nonce {
        Some(nonce) if leases.in_use(room, &nonce) => Err(TokenError::InUse),
        nonce => Ok(nonce),
    }
}

/// What makes a token one that may join `room`, whether or not its nonce is in use: signature
/// and expiry, the lobby's lifetime limit, and its demand for player tokens.
fn check_token_policy(
    config: &LobbyConfig,
    secret: &str,
    room: &str,
    token: Option<&str>,
    now_unix: u64,
) -> Result<crate::auth::VerifiedToken, TokenError> {
    let verified = verify_token(
        secret.as_bytes(),
        room,
        token.ok_or(TokenError::Missing)?,
        now_unix,
    )?;
    let max_secs = config.max_token_lifetime_secs;
    if max_secs != 0 && verified.expiry.saturating_sub(now_unix) > max_secs {
        return Err(TokenError::TooLongLived { max_secs });
    }
    if verified.nonce.is_none() && config.require_token_nonce {
        return Err(TokenError::NonceRequired);
    }
    Ok(verified)
}

/// `--allow-origin`: with a list, only pages from those origins (and no client without one).
fn check_origin(config: &LobbyConfig, origin: Option<&str>) -> Result<(), Refusal> {
    if config.allowed_origins.is_empty()
        || origin.is_some_and(|o| config.allowed_origins.iter().any(|a| a == o))
    {
        return Ok(());
    }
    Err(Refusal::new(
        Reason::OriginNotAllowed,
        StatusCode::FORBIDDEN,
        format!("origin {} is not allowed", origin.unwrap_or("(none)")),
    ))
}

/// The token a plain HTTP request presents: `Authorization: Bearer <token>` (a backend, a
/// scraper), else `?token=` (a page that cannot set headers without a CORS preflight).
fn presented_token(authorization: Option<&str>, query: &str) -> Option<String> {
    let bearer = authorization.and_then(|value| {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    });
    bearer.or_else(|| parse_query(query).remove("token"))
}

/// Whether a request may read the admin endpoints (`/rooms`, `/metrics`). Open without a
/// secret; with one it needs a token minted for [`ADMIN_SCOPE`], as `Authorization: Bearer
/// <token>` (a metrics scraper) or `?token=` (a page that cannot set headers without a CORS
/// preflight). No credentials: 401; credentials that do not open `/admin`: 403.
pub fn admit_admin(
    config: &LobbyConfig,
    authorization: Option<&str>,
    query: &str,
    now_unix: u64,
) -> Result<(), Refusal> {
    let Some(secret) = &config.secret else {
        return Ok(());
    };
    let Some(token) = presented_token(authorization, query) else {
        return Err(Refusal::new(
            Reason::AdminUnauthorized,
            StatusCode::UNAUTHORIZED,
            "an admin token is required (Authorization: Bearer <token>, or ?token=)",
        ));
    };
    verify_token(secret.as_bytes(), ADMIN_SCOPE, &token, now_unix)
        .map(|_| ())
        .map_err(|error| {
            Refusal::new(
                Reason::AdminForbidden,
                StatusCode::FORBIDDEN,
                format!("admin token refused: {error}"),
            )
        })
}

/// What the server knows of a request for TURN credentials: `GET /turn/<room>` (or `/turn`, the
/// default room) with the room's join token, when the lobby has a secret.
#[derive(Debug, Clone, Copy)]
pub struct TurnFacts<'a> {
    /// The URL path after `/turn`: empty, or `/` and the room, percent-encoded, as a join's.
    pub room_path: &'a str,
    /// The URL query without its `?` (`token=`, `user=`).
    pub query: &'a str,
    /// The `Authorization` header, if any (`Bearer <token>`).
    pub authorization: Option<&'a str>,
    /// The `Origin` header, if any.
    pub origin: Option<&'a str>,
    /// Seconds since the Unix epoch: tokens expire against it.
    pub now_unix: u64,
}

/// Who TURN credentials are for: the `user` part of their username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnGrant {
    /// A player token's nonce, else `?user=`, else `player`.
    pub user: String,
}

/// Decides a request for TURN credentials. Without a secret anyone may have them; with one, the
/// request needs what would let it join the room: a join token for it (a bearer header or
/// `?token=`) that passes the lobby's lifetime and nonce policy. A player token in use by a live
/// connection still counts, since that is the player asking. No token: 401; a token that would
/// not join the room: 403. Only `--allow-origin` is checked as for a join; connection and join
/// rate limits are not (an answer costs one HMAC).
pub fn admit_turn(config: &LobbyConfig, facts: &TurnFacts<'_>) -> Result<TurnGrant, Refusal> {
    check_origin(config, facts.origin)?;
    let room = room_name(facts.room_path)
        .map_err(|message| Refusal::new(Reason::BadRoom, StatusCode::BAD_REQUEST, message))?;
    let asked = parse_query(facts.query).remove("user");
    if let Some(user) = &asked
        && !crate::turn::valid_user(user)
    {
        return Err(Refusal::new(
            Reason::BadTurnUser,
            StatusCode::BAD_REQUEST,
            format!("user must be 1 to 64 of A-Z a-z 0-9 - _, not {user:?}"),
        ));
    }
    let nonce = match &config.secret {
        None => None,
        Some(secret) => {
            let Some(token) = presented_token(facts.authorization, facts.query) else {
                return Err(Refusal::new(
                    Reason::TurnUnauthorized,
                    StatusCode::UNAUTHORIZED,
                    "a join token for the room is required (?token=, or Authorization: Bearer)",
                ));
            };
            check_token_policy(config, secret, &room, Some(&token), facts.now_unix)
                .map_err(|error| {
                    Refusal::new(
                        Reason::TurnForbidden,
                        StatusCode::FORBIDDEN,
                        format!("token refused for room {room:?}: {error}"),
                    )
                })?
                .nonce
        }
    };
    Ok(TurnGrant {
        user: nonce.or(asked).unwrap_or_else(|| "player".to_owned()),
    })
}

#[cfg(test)]
mod tests;
