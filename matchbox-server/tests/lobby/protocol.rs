//! The lobby speaks matchbox's signaling protocol exactly: the JSON each client sees.

use std::time::Duration;

use crate::support::client::*;

#[tokio::test]
async fn join_signal_keep_alive_and_leave_in_matchbox_json() {
    let lobby = lobby(|_| {}).await;
    let (mut a, a_id) = join(&lobby, "/room").await;
    let (mut b, b_id) = join(&lobby, "/room").await;
    assert_ne!(a_id, b_id);
    uuid::Uuid::parse_str(&a_id).expect("ids are bare UUIDs");

    assert_eq!(
        next_text(&mut a).await,
        format!(r#"{{"NewPeer":"{b_id}"}}"#),
        "the member already there makes the offer"
    );
    assert!(
        silent(&mut b, Duration::from_millis(200)).await,
        "the newcomer is told of nobody: each pair is introduced to one side"
    );

    // The data is relayed byte for byte, as the sender wrote it.
    let relayed =
        |sender: &str, data: &str| format!(r#"{{"Signal":{{"sender":"{sender}","data":{data}}}}}"#);
    send(&mut a, &signal_to(&b_id, &offer("from a"))).await;
    assert_eq!(next_text(&mut b).await, relayed(&a_id, &offer("from a")));
    send(&mut b, &signal_to(&a_id, &answer("from b"))).await;
    assert_eq!(next_text(&mut a).await, relayed(&b_id, &answer("from b")));
    send(&mut b, &signal_to(&a_id, &candidate(50000))).await;
    assert_eq!(next_text(&mut a).await, relayed(&b_id, &candidate(50000)));

    send(&mut a, r#""KeepAlive""#).await;
    assert!(
        silent(&mut b, Duration::from_millis(200)).await,
        "a keep-alive goes nowhere"
    );

    b.close(None).await.unwrap();
    assert_eq!(
        next_text(&mut a).await,
        format!(r#"{{"PeerLeft":"{b_id}"}}"#)
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn a_third_peer_is_offered_by_both_others() {
    let lobby = lobby(|_| {}).await;
    let (mut a, _) = join(&lobby, "/trio").await;
    let (mut b, b_id) = join(&lobby, "/trio").await;
    next_text(&mut a).await;
    let (mut c, c_id) = join(&lobby, "/trio").await;
    assert_eq!(
        next_text(&mut a).await,
        format!(r#"{{"NewPeer":"{c_id}"}}"#)
    );
    assert_eq!(
        next_text(&mut b).await,
        format!(r#"{{"NewPeer":"{c_id}"}}"#)
    );
    assert!(silent(&mut c, Duration::from_millis(200)).await);
    assert_ne!(b_id, c_id);
    lobby.shutdown().await;
}

#[tokio::test]
async fn the_root_path_is_the_default_room() {
    let lobby = lobby(|_| {}).await;
    let (mut a, _) = join(&lobby, "/").await;
    let (_b, b_id) = join(&lobby, "/").await;
    assert_eq!(
        next_text(&mut a).await,
        format!(r#"{{"NewPeer":"{b_id}"}}"#)
    );
    lobby.shutdown().await;
}
