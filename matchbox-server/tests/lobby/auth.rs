//! Signed join tokens and the Origin allowlist.

use crate::support::client::*;
use peersync_lobby::auth::{ADMIN_SCOPE, mint_token};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn tokens_are_checked_for_room_signature_and_expiry() {
    let lobby = lobby(|config| config.secret = Some("s3cret".into())).await;
    let good = mint_token(b"s3cret", "arena", now() + 60);
    let (_ws, _) = join(&lobby, &format!("/arena?token={good}")).await;

    let cases = [
        ("/arena".to_owned(), "token is required"),
        (
            format!("/arena?token={}", mint_token(b"wrong", "arena", now() + 60)),
            "does not match",
        ),
        (format!("/other?token={good}"), "does not match"),
        (
            format!("/arena?token={}", mint_token(b"s3cret", "arena", now() - 1)),
            "expired",
        ),
        ("/arena?token=garbage".to_owned(), "malformed"),
    ];
    for (path, reason) in cases {
        let (status, body) = refused(&lobby, &path).await;
        assert_eq!(status, 401, "{path}");
        assert!(
            body.contains(reason),
            "{path}: {body:?} should say {reason:?}"
        );
    }
    let admin = mint_token(b"s3cret", ADMIN_SCOPE, now() + 60);
    let (_, metrics) = get(&lobby, &format!("/metrics?token={admin}")).await;
    assert!(
        metrics.contains(r#"peersync_lobby_refusals_total{reason="bad_token"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"peersync_lobby_refusals_total{reason="expired_token"} 1"#),
        "{metrics}"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn only_allowed_origins_may_join() {
    let lobby = lobby(|config| config.allowed_origins = vec!["https://game.example".into()]).await;
    let mut request = url(&lobby, "/room").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://game.example".parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("an allowed origin joins");

    let mut request = url(&lobby, "/room").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("another origin is refused with 403, got {other:?}"),
    }
    let (status, _) = refused(&lobby, "/room").await;
    assert_eq!(
        status, 403,
        "no origin at all is refused when an allowlist is set"
    );
    lobby.shutdown().await;
}
