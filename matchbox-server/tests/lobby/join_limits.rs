//! Joins are rate limited per full-mesh room and per source address (429 with a reason,
//! counted), with defaults that let a room of 16 fill at once.

use crate::support::client::*;

#[tokio::test]
async fn a_room_takes_its_burst_then_refuses_with_429() {
    let lobby = lobby(|config| {
        config.join_burst_per_room = 3;
        config.join_rate_per_room = 0.01;
    })
    .await;
    let mut seats = Vec::new();
    for _ in 0..3 {
        seats.push(join(&lobby, "/busy").await);
    }
    let (status, body) = refused(&lobby, "/busy").await;
    assert_eq!(status, 429);
    assert!(body.contains("too many joins to room \"busy\""), "{body}");
    let _other = join(&lobby, "/quiet").await;
    let _matchmaking: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| join(&lobby, "/busy?next=2"))).await;
    let (_, metrics) = get(&lobby, "/metrics").await;
    assert!(
        metrics.contains(r#"peersync_lobby_refusals_total{reason="join_rate_room"} 1"#),
        "{metrics}"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn an_address_takes_its_burst_then_refuses_with_429() {
    let lobby = lobby(|config| {
        config.join_burst_per_ip = 4;
        config.join_rate_per_ip = 0.01;
    })
    .await;
    let mut seats = Vec::new();
    for room in ["/a", "/b", "/c"] {
        seats.push(join(&lobby, room).await);
    }
    // Refused attempts count too: a script retrying garbage is still churning.
    assert_eq!(refused(&lobby, "/a/b").await.0, 400);
    let (status, body) = refused(&lobby, "/d").await;
    assert_eq!(status, 429);
    assert!(body.contains("too many joins from your address"), "{body}");
    let (_, metrics) = get(&lobby, "/metrics").await;
    assert!(
        metrics.contains(r#"peersync_lobby_refusals_total{reason="join_rate_address"} 1"#),
        "{metrics}"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn by_default_sixteen_players_fill_a_room_at_once() {
    let lobby = lobby(|_| {}).await;
    let players =
        futures_util::future::join_all((0..16).map(|_| join(&lobby, "/full-house"))).await;
    assert_eq!(players.len(), 16);
    let (status, body) = refused(&lobby, "/full-house").await;
    assert_eq!((status, body.contains("full")), (409, true), "{body}");
    lobby.shutdown().await;
}
