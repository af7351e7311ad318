//! Shutting down closes every WebSocket with 1001 (going away) and a reason.

use crate::support::client::*;

#[tokio::test]
async fn clients_are_told_the_lobby_is_going_away() {
    let lobby = lobby(|_| {}).await;
    let addr = lobby.local_addr();
    let (mut a, _) = join(&lobby, "/room").await;
    let (mut b, _) = join(&lobby, "/other").await;
    let stopping = tokio::spawn(lobby.shutdown());
    for ws in [&mut a, &mut b] {
        let frame = closed(ws).await.expect("a close frame");
        assert_eq!(u16::from(frame.code), 1001);
        assert!(frame.reason.contains("shutting down"), "{frame:?}");
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown completes")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens afterwards"
    );
}
