//! With a secret set, the room list and the metrics need an admin token (a token minted for
//! `/admin`), as a bearer header or `?token=`: 401 without one, 403 with any other. `/health`
//! stays open for load balancers.

use crate::support::client::*;
use peersync_lobby::auth::{ADMIN_SCOPE, mint_token};

#[tokio::test]
async fn rooms_and_metrics_need_an_admin_token() {
    let lobby = lobby(|config| config.secret = Some("s3cret".into())).await;
    // A year: admin tokens are exempt from --max-token-lifetime, for scrapers.
    let admin = mint_token(b"s3cret", ADMIN_SCOPE, now() + 365 * 86_400);
    let room_token = mint_token(b"s3cret", "arena", now() + 60);
    assert_eq!(get(&lobby, "/health").await.0, 200);
    for path in ["/rooms", "/metrics"] {
        let response = get_raw(&lobby, path, "").await;
        assert!(response.starts_with("HTTP/1.1 401"), "{path}: {response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{response}"
        );
        assert!(response.contains("admin token is required"), "{response}");
        let (status, body) = get_with(
            &lobby,
            path,
            &format!("Authorization: Bearer {room_token}\r\n"),
        )
        .await;
        assert_eq!(
            status, 403,
            "{path}: a room's token is no admin token: {body}"
        );
        assert_eq!(get(&lobby, &format!("{path}?token=garbage")).await.0, 403);
        let (status, _) =
            get_with(&lobby, path, &format!("Authorization: Bearer {admin}\r\n")).await;
        assert_eq!(status, 200, "{path} with the admin token as a bearer");
        assert_eq!(get(&lobby, &format!("{path}?token={admin}")).await.0, 200);
    }
    let (_, metrics) = get(&lobby, &format!("/metrics?token={admin}")).await;
    for line in [
        r#"peersync_lobby_refusals_total{reason="admin_unauthorized"} 2"#,
        r#"peersync_lobby_refusals_total{reason="admin_forbidden"} 4"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    lobby.shutdown().await;
}

#[tokio::test]
async fn without_a_secret_they_stay_open() {
    let lobby = lobby(|_| {}).await;
    assert_eq!(get(&lobby, "/rooms").await.0, 200);
    assert_eq!(get(&lobby, "/metrics").await.0, 200);
    lobby.shutdown().await;
}
