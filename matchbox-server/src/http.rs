//! The plain HTTP endpoints beside the WebSocket rooms: health for load balancers, the room
//! list for lobby browsers, Prometheus metrics, and optionally a static directory (the wasm
//! demo, [`crate::web`]), all on the lobby's one port.
//!
//! With a secret set, room names may be private (a match's name is its invitation), so `/rooms`
//! and `/metrics` need an admin token ([`crate::admission::admit_admin`]); `/health` stays open
//! for load balancers.

use std::sync::atomic::Ordering;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admission::admit_admin;
use crate::server::{Shared, refuse, unix_now};
use crate::uri::parse_query;

/// Answers a request that is not a WebSocket upgrade.
pub(crate) async fn endpoint(shared: &Shared, request: Request) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "only GET").into_response();
    }
    let query = request.uri().query().unwrap_or("");
    let path = request.uri().path();
    if path == "/rooms" || path == "/metrics" {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(refusal) = admit_admin(&shared.config, authorization, query, unix_now()) {
            let unauthorized = refusal.status == StatusCode::UNAUTHORIZED;
            let mut response = refuse(shared, refusal);
            if unauthorized {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"peersync-lobby\""),
                );
            }
            return response;
        }
    }
    match path {
        // `ok`, then this start's id: a client that sees it change knows its room is gone.
        "/health" => (StatusCode::OK, format!("ok {}\n", shared.boot)).into_response(),
        "/rooms" => rooms(shared, query),
        "/metrics" => metrics(shared),
        _ => match &shared.site {
            Some(site) => site.serve(request).await,
            None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        },
    }
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
