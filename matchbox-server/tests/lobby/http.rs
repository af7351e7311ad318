//! The HTTP endpoints: health, the room list for lobby browsers and Prometheus metrics (the
//! static directory: `static_site`; TURN credentials: `turn`).

use crate::support::client::*;

#[tokio::test]
async fn health_rooms_and_metrics() {
    let lobby = lobby(|config| config.room_capacity = 4).await;
    let (status, health) = get(&lobby, "/health").await;
    assert_eq!(status, 200);
    let boot = health
        .strip_prefix("ok ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .expect("`ok <boot id>`");
    assert_eq!(boot.len(), 36, "the boot id is a UUID: {health:?}");
    let probe = request(&lobby, "GET", "/health", "Origin: http://game.example\r\n").await;
    assert_eq!(
        (
            probe.header("access-control-allow-origin"),
            probe.header("cache-control")
        ),
        (Some("*"), Some("no-store")),
        "a browser player's probe from a page on another origin should read a fresh answer"
    );
    let other = crate::support::client::lobby(|_| {}).await;
    assert_ne!(
        get(&other, "/health").await.1,
        health,
        "another start of the lobby says another boot id"
    );

    let (_a, _) = join(&lobby, "/eu-1").await;
    let (_b, _) = join(&lobby, "/eu-1").await;
    let (_c, _) = join(&lobby, "/us-1").await;
    let (_d, _) = join(&lobby, "/eu-duel?next=2").await;

    let (status, body) = get(&lobby, "/rooms").await;
    assert_eq!(status, 200);
    let rooms: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        rooms,
        serde_json::json!([
            {"name": "eu-1", "peers": 2, "capacity": 4},
            {"name": "eu-duel", "next": 2, "peers": 1, "capacity": 2},
            {"name": "us-1", "peers": 1, "capacity": 4},
        ])
    );
    let (_, body) = get(&lobby, "/rooms?prefix=us").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!([{"name": "us-1", "peers": 1, "capacity": 4}])
    );

    let (status, metrics) = get(&lobby, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("peersync_lobby_peers 4"), "{metrics}");
    assert!(
        metrics.contains("peersync_lobby_websockets_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE peersync_lobby_closes_total counter"),
        "{metrics}"
    );
    assert_eq!(get(&lobby, "/nothing-here").await.0, 404);
    lobby.shutdown().await;
}
