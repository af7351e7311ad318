//! Who may join which room: one pure decision from the lobby's settings and the facts of a
//! request, so every refusal (its HTTP status, its reason, its order against the others) is
//! tested without a socket, in the spirit of [`crate::state`].
//!
//! The server gathers the facts (path, query, `Origin`, connection counts, the clock) and the
//! rooms they are judged against, and acts on the answer; nothing here does I/O or reads a
//! clock.

use axum::http::StatusCode;

use crate::LobbyConfig;
use crate::auth::{TokenError, verify_token};
use crate::metrics::Refusal as Reason;
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
    /// Connections open when this one was accepted.
    pub connections: ConnectionCounts,
    /// Whether the lobby is shutting down.
    pub shutting_down: bool,
    /// Seconds since the Unix epoch: tokens expire against it.
    pub now_unix: u64,
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
/// general first, so a client hears about the first thing it must fix.
pub fn admit(
    config: &LobbyConfig,
    facts: &JoinFacts<'_>,
    rooms: &Rooms,
) -> Result<RoomRequest, Refusal> {
    check_connections(config, facts.connections)?;
    if facts.shutting_down {
        return Err(Refusal::new(
            Reason::ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "the lobby is shutting down",
        ));
    }
    if !config.allowed_origins.is_empty()
        && !facts
            .origin
            .is_some_and(|o| config.allowed_origins.iter().any(|a| a == o))
    {
        return Err(Refusal::new(
            Reason::OriginNotAllowed,
            StatusCode::FORBIDDEN,
            format!("origin {} is not allowed", facts.origin.unwrap_or("(none)")),
        ));
    }
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
    if let Some(secret) = &config.secret {
        let checked = match query.get("token") {
            None => Err(TokenError::Missing),
            Some(token) => verify_token(secret.as_bytes(), &name, token, facts.now_unix),
        };
        if let Err(error) = checked {
            let reason = match error {
                TokenError::Missing => Reason::MissingToken,
                TokenError::Expired => Reason::ExpiredToken,
                TokenError::Malformed | TokenError::BadSignature => Reason::BadToken,
            };
            return Err(Refusal::new(
                reason,
                StatusCode::UNAUTHORIZED,
                error.to_string(),
            ));
        }
    }
    let request = RoomRequest { name, next };
    match rooms.check_join(&request) {
        Ok(()) => Ok(request),
        Err(JoinError::RoomFull { capacity }) => Err(Refusal::new(
            Reason::RoomFull,
            StatusCode::CONFLICT,
            format!("room {:?} is full ({capacity} peers)", request.name),
        )),
        Err(JoinError::AlreadyJoined) => unreachable!("check_join looks at capacity only"),
    }
}

#[cfg(test)]
mod tests;
