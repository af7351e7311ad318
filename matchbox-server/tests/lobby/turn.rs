//! `GET /turn/<room>`: time-limited TURN credentials in coturn's `use-auth-secret` scheme, as JSON
//! a page on any origin may read, never cached; with a lobby secret, only for a request holding
//! the room's join token. (`tests/integration/nat.rs` hands them to real players and coturn.)

use peersync_lobby::auth::{ADMIN_SCOPE, mint_player_token, mint_token};
use peersync_lobby::metrics::Refusal;
use peersync_lobby::turn::turn_password;

use crate::support::client::*;

const TURN_SECRET: &str = "coturn-static-auth-secret";

fn uris() -> Vec<String> {
    vec![
        "stun:203.0.113.10:3478".to_owned(),
        "turn:203.0.113.10:3478?transport=udp".to_owned(),
    ]
}

async fn turn_lobby(secret: Option<&str>) -> peersync_lobby::Lobby {
    lobby(|config| {
        config.turn_secret = Some(TURN_SECRET.into());
        config.turn_uris = uris();
        config.turn_ttl_secs = 3_600;
        config.secret = secret.map(str::to_owned);
    })
    .await
}

/// The headers every answer of `/turn` carries, credentials or refusal.
fn assert_turn_headers(response: &HttpResponse, what: &str) {
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("*"),
        "{what}: a game page on another origin should be able to read the answer"
    );
    assert_eq!(
        response.header("cache-control"),
        Some("no-store"),
        "{what}: credentials are per player and expire, so nothing should keep them"
    );
}

/// The credentials in a 200 answer, checked against the secret; returns the username's user.
fn credentials(response: &HttpResponse, what: &str) -> String {
    assert_eq!(
        response.status,
        200,
        "{what} should get credentials: {}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_turn_headers(response, what);
    let json: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    let username = json["username"].as_str().expect("a username");
    let (expiry, user) = username.split_once(':').expect("<expiry>:<user>");
    let expiry: u64 = expiry.parse().expect("the expiry is Unix seconds");
    let expected = now() + 3_600;
    assert!(
        expiry.abs_diff(expected) <= 5,
        "{what}: the credential should expire --turn-ttl from now ({expected}), not at {expiry}"
    );
    assert_eq!(
        json["credential"].as_str(),
        Some(turn_password(TURN_SECRET.as_bytes(), username).as_str()),
        "{what}: the credential is base64(HMAC-SHA1(turn secret, username))"
    );
    assert_eq!(json["ttl"], 3_600);
    assert_eq!(json["uris"], serde_json::json!(uris()));
    user.to_owned()
}

#[tokio::test]
async fn without_a_lobby_secret_anyone_gets_turn_credentials() {
    let lobby = turn_lobby(None).await;
    let answer = request(&lobby, "GET", "/turn", "").await;
    assert_eq!(credentials(&answer, "/turn"), "player");
    let answer = request(&lobby, "GET", "/turn/arena?user=alice", "").await;
    assert_eq!(credentials(&answer, "?user=alice"), "alice");

    for (path, status) in [
        ("/turn?user=a%3Ab", 400),
        ("/turn/a%2Fb", 400),
        ("/turn/%ff", 400),
        ("/turnip", 404),
    ] {
        let answer = request(&lobby, "GET", path, "").await;
        assert_eq!(answer.status, status, "{path}");
    }
    assert_eq!(request(&lobby, "POST", "/turn", "").await.status, 405);
    let (_, metrics) = get(&lobby, "/metrics").await;
    for line in [
        r#"peersync_lobby_refusals_total{reason="bad_turn_user"} 1"#,
        r#"peersync_lobby_refusals_total{reason="bad_room"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    // A room may still be called `turn`: a WebSocket upgrade joins it.
    let (_ws, _) = join(&lobby, "/turn").await;
    lobby.shutdown().await;
}

#[tokio::test]
async fn without_a_turn_secret_there_are_no_turn_credentials() {
    let lobby = lobby(|_| {}).await;
    assert_eq!(
        get(&lobby, "/turn").await.0,
        404,
        "a lobby that was given no TURN secret should not pretend to have credentials"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn with_a_lobby_secret_turn_credentials_need_the_rooms_join_token() {
    let lobby = turn_lobby(Some("lobby-secret")).await;
    let expiry = now() + 600;
    let player = mint_player_token(b"lobby-secret", "arena", expiry, "p-1").unwrap();

    let missing = request(&lobby, "GET", "/turn/arena", "").await;
    assert_eq!(missing.status, 401, "no token");
    assert_turn_headers(&missing, "a 401");
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "a 401 says which credentials it wants: {:?}",
        missing.headers
    );
    let other_room = mint_token(b"lobby-secret", "elsewhere", expiry);
    let admin = mint_token(b"lobby-secret", ADMIN_SCOPE, expiry);
    for token in [other_room.as_str(), admin.as_str(), "garbage"] {
        let refused = request(&lobby, "GET", &format!("/turn/arena?token={token}"), "").await;
        assert_eq!(
            refused.status, 403,
            "{token}: a token that would not join the room should get no credentials"
        );
        assert_turn_headers(&refused, "a 403");
    }
    let refused = request(
        &lobby,
        "GET",
        &format!("/turn/arena?token={other_room}"),
        "",
    )
    .await;
    let reason = String::from_utf8_lossy(&refused.body);
    assert!(
        reason.contains("does not match this room"),
        "the refusal should say why: {reason}"
    );

    let (_ws, _) = join(&lobby, &format!("/arena?token={player}")).await;
    let answer = request(&lobby, "GET", &format!("/turn/arena?token={player}"), "").await;
    assert_eq!(
        credentials(&answer, "the seated player holding the token"),
        "p-1",
        "a player token's nonce should name the user"
    );
    let answer = request(
        &lobby,
        "GET",
        "/turn/arena",
        &format!("Authorization: Bearer {player}\r\n"),
    )
    .await;
    credentials(&answer, "the token as a bearer header");

    assert_eq!(lobby.metrics().refusals(Refusal::TurnUnauthorized), 1);
    assert_eq!(lobby.metrics().refusals(Refusal::TurnForbidden), 4);
    lobby.shutdown().await;
}
