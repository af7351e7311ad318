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

    let (a, a_id) = join(&lobby, "/eu-1").await;
    let membership = |body: String| body.rsplit(' ').next().unwrap_or("").trim().to_owned();
    assert_eq!(
        membership(get(&lobby, &format!("/health?peer={a_id}")).await.1),
        "present",
        "a player asking about its own id while in a room should hear it is there"
    );
    let (status, body) = get(&lobby, "/health?peer=not-a-uuid").await;
    assert_eq!(
        (status, body.as_str()),
        (400, "peer is not a peer id (a UUID)\n"),
        "a malformed peer id gets a clear refusal"
    );
    drop(a);
    let absent = async {
        loop {
            let body = get(&lobby, &format!("/health?peer={a_id}")).await.1;
            if membership(body) == "absent" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), absent)
        .await
        .expect("once its lobby connection is gone, the lobby should say the peer is absent");
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
        metrics.contains("peersync_lobby_websockets_total 5"),
        "five joins, the first of them gone: {metrics}"
    );
    assert!(
        metrics.contains("# TYPE peersync_lobby_closes_total counter"),
        "{metrics}"
    );
    assert_eq!(get(&lobby, "/nothing-here").await.0, 404);
    lobby.shutdown().await;
}
