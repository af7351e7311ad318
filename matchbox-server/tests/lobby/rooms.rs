//! Rooms are isolated, matchmaking groups players N at a time, capacity holds, empty rooms go.

use std::time::Duration;

use crate::support::client::*;

#[tokio::test]
async fn signals_never_cross_rooms() {
    let lobby = lobby(|_| {}).await;
    let (mut a, _) = join(&lobby, "/red").await;
    let (mut outsider, outsider_id) = join(&lobby, "/blue").await;
    send(&mut a, &signal_to(&outsider_id, &offer("x"))).await;
    assert!(
        silent(&mut outsider, Duration::from_millis(300)).await,
        "a peer of another room gets nothing"
    );
    send(&mut a, r#""KeepAlive""#).await;
    let (_, metrics) = get(&lobby, "/metrics").await;
    assert!(
        metrics.contains("peersync_lobby_signals_unknown_receiver_total 1"),
        "{metrics}"
    );
    // The sender is not punished: a receiver that just left looks the same.
    let (_b, b_id) = join(&lobby, "/red").await;
    assert_eq!(
        next_text(&mut a).await,
        format!(r#"{{"NewPeer":"{b_id}"}}"#)
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn next_2_pairs_four_players_into_two_pairs() {
    let lobby = lobby(|_| {}).await;
    let (mut p1, _) = join(&lobby, "/duel?next=2").await;
    let (mut p2, id2) = join(&lobby, "/duel?next=2").await;
    let (mut p3, _) = join(&lobby, "/duel?next=2").await;
    let (mut p4, id4) = join(&lobby, "/duel?next=2").await;
    assert_eq!(
        next_text(&mut p1).await,
        format!(r#"{{"NewPeer":"{id2}"}}"#)
    );
    assert_eq!(
        next_text(&mut p3).await,
        format!(r#"{{"NewPeer":"{id4}"}}"#)
    );
    assert!(silent(&mut p2, Duration::from_millis(200)).await);
    assert!(silent(&mut p4, Duration::from_millis(200)).await);
    send(&mut p1, &signal_to(&id4, &offer("x"))).await;
    assert!(
        silent(&mut p4, Duration::from_millis(200)).await,
        "pairs are isolated from each other"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn next_waits_until_the_group_is_full() {
    let lobby = lobby(|_| {}).await;
    let (mut p1, _) = join(&lobby, "/trio?next=3").await;
    let (mut p2, id2) = join(&lobby, "/trio?next=3").await;
    assert!(
        silent(&mut p1, Duration::from_millis(200)).await,
        "two of three: nobody is introduced yet"
    );
    let (_p3, id3) = join(&lobby, "/trio?next=3").await;
    assert_eq!(
        next_text(&mut p1).await,
        format!(r#"{{"NewPeer":"{id2}"}}"#)
    );
    assert_eq!(
        next_text(&mut p1).await,
        format!(r#"{{"NewPeer":"{id3}"}}"#)
    );
    assert_eq!(
        next_text(&mut p2).await,
        format!(r#"{{"NewPeer":"{id3}"}}"#)
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn invalid_next_values_are_refused_with_400() {
    let lobby = lobby(|config| config.max_next = 8).await;
    for next in ["0", "1", "abc", "-2", "9", "99999999999999999999999"] {
        let (status, body) = refused(&lobby, &format!("/room?next={next}")).await;
        assert_eq!(status, 400, "next={next}");
        assert!(
            body.contains("next must be a whole number from 2 to 8"),
            "next={next}: {body}"
        );
    }
    let (_, metrics) = get(&lobby, "/metrics").await;
    assert!(
        metrics.contains(r#"peersync_lobby_refusals_total{reason="bad_next"} 6"#),
        "{metrics}"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn a_full_room_refuses_with_409_and_frees_up_when_someone_leaves() {
    let lobby = lobby(|config| config.room_capacity = 2).await;
    let (a, _) = join(&lobby, "/small").await;
    let (_b, _) = join(&lobby, "/small").await;
    let (status, body) = refused(&lobby, "/small").await;
    assert_eq!(status, 409);
    assert!(body.contains("full"), "{body}");
    drop(a);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if tokio_tungstenite::connect_async(url(&lobby, "/small"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the seat freed by a leaver is taken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lobby.shutdown().await;
}

#[tokio::test]
async fn bad_room_names_are_refused() {
    let lobby = lobby(|_| {}).await;
    let (status, body) = refused(&lobby, "/a/b").await;
    assert_eq!((status, body.contains("room name")), (400, true), "{body}");
    let (status, _) = refused(&lobby, &format!("/{}", "x".repeat(300))).await;
    assert_eq!(status, 400);
    lobby.shutdown().await;
}
