//! The plain HTTP endpoints beside the WebSocket rooms: health for load balancers, the room
//! list for lobby browsers, Prometheus metrics, TURN credentials (with `--turn-secret`), and
//! optionally a static directory (the wasm demo, [`crate::web`]), all on the lobby's one port.
//!
//! With a secret set, room names may be private (a match's name is its invitation), so `/rooms`
//! and `/metrics` need an admin token ([`crate::admission::admit_admin`]), and `/turn/<room>`
//! the room's join token ([`crate::admission::admit_turn`]); `/health` stays open for load
//! balancers.

use std::sync::atomic::Ordering;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admission::{Refusal, TurnFacts, admit_admin, admit_turn};
use crate::server::{Shared, refuse, unix_now};
use crate::turn::mint_turn_credential;
use crate::uri::parse_query;

/// Answers a request that is not a WebSocket upgrade.
pub(crate) async fn endpoint(shared: &Shared, request: Request) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "only GET").into_response();
    }
    let query = request.uri().query().unwrap_or("");
    let path = request.uri().path();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if (path == "/rooms" || path == "/metrics")
        && let Err(refusal) = admit_admin(&shared.config, authorization, query, unix_now())
    {
        return refuse_with_challenge(shared, refusal);
    }
    match path {
        "/health" => health(shared, query),
        "/rooms" => rooms(shared, query),
        "/metrics" => metrics(shared),
        _ => {
            if let Some(room_path) = turn_room_path(path) {
                let facts = TurnFacts {
                    room_path,
                    query,
                    authorization,
                    origin: request
                        .headers()
                        .get(header::ORIGIN)
                        .and_then(|v| v.to_str().ok()),
                    now_unix: unix_now(),
                };
                return turn(shared, &facts);
            }
            match &shared.site {
                Some(site) => site.serve(request).await,
                None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
            }
        }
    }
}

/// A refusal of a request that may present credentials: a 401 says which kind it should.
fn refuse_with_challenge(shared: &Shared, refusal: Refusal) -> Response {
    let unauthorized = refusal.status == StatusCode::UNAUTHORIZED;
    let mut response = refuse(shared, refusal);
    if unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"peersync-lobby\""),
        );
    }
    response
}

/// `/turn` or `/turn/<room>`: the part after `/turn`, which names the room as a join's path
/// does (empty: the default room).
fn turn_room_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/turn")?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// TURN credentials as JSON, or why not. Every answer may be read by a page on any origin and
/// is never cached: credentials are per player and expire.
fn turn(shared: &Shared, facts: &TurnFacts<'_>) -> Response {
    let Some(secret) = &shared.config.turn_secret else {
        return (
            StatusCode::NOT_FOUND,
            "this lobby hands out no TURN credentials\n",
        )
            .into_response();
    };
    let response = match admit_turn(&shared.config, facts) {
        Ok(grant) => {
            let credential = mint_turn_credential(
                secret.as_bytes(),
                &grant.user,
                facts.now_unix,
                shared.config.turn_ttl_secs,
                &shared.config.turn_uris,
            );
            let body = serde_json::to_string(&credential).expect("a credential serializes");
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(refusal) => refuse_with_challenge(shared, refusal),
    };
    readable_anywhere_uncached(response)
}

/// `ok`, then this start's id: a client that sees it change knows its room is gone. Players
/// ask every few seconds (bevy_peersync's lobby probe), a browser's from a page that may be on
/// another origin, so any origin may read it and nothing may cache it.
///
/// With `?peer=<id>`, a third word says whether that peer is in a room here (`present` or
/// `absent`): a player whose lobby connection was closed (idle, rate limits) while its peer
/// connections stayed up learns that no new player can reach it, and joins again. Peer ids
/// are random and known only to their room, so this tells a stranger nothing it could use.
fn health(shared: &Shared, query: &str) -> Response {
    let asked = parse_query(query).remove("peer");
    let membership = match asked.as_deref().map(uuid::Uuid::parse_str) {
        None => "",
        Some(Err(_)) => {
            let refusal = (StatusCode::BAD_REQUEST, "peer is not a peer id (a UUID)\n");
            return readable_anywhere_uncached(refusal.into_response());
        }
        Some(Ok(peer)) if shared.inner().rooms.contains(peer) => " present",
        Some(Ok(_)) => " absent",
    };
    let body = format!("ok {}{membership}\n", shared.boot);
    readable_anywhere_uncached((StatusCode::OK, body).into_response())
}

/// For answers a page on any origin may read and nothing may keep: `/health`, `/turn`.
fn readable_anywhere_uncached(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn rooms(shared: &Shared, query: &str) -> Response {
    let query = parse_query(query);
    let prefix = query.get("prefix").map_or("", String::as_str);
    let rooms = shared.inner().rooms.list(prefix);
    let body = serde_json::to_string(&rooms).expect("room info serializes");
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A lobby browser may be a page on another origin.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn metrics(shared: &Shared) -> Response {
    let (peers, rooms) = {
        let inner = shared.inner();
        (inner.rooms.peer_count(), inner.rooms.group_count())
    };
    let text = shared.metrics.render(
        shared.open_connections.load(Ordering::Relaxed),
        peers,
        rooms,
    );
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
