//! Every limit ends the offending connection with its own close code or HTTP status and a
//! reason, is counted, and leaves everyone else served.

use std::time::Duration;

use crate::support::client::*;
use futures_util::SinkExt;
use peersync_lobby::Lobby;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

/// Two well-behaved peers, to show they are untouched by what happens next.
async fn bystanders(lobby: &Lobby) -> (Ws, Ws, String) {
    let (mut a, _) = join(lobby, "/room").await;
    let (b, b_id) = join(lobby, "/room").await;
    next_text(&mut a).await; // NewPeer(b)
    (a, b, b_id)
}

async fn still_served(a: &mut Ws, b: &mut Ws, b_id: &str) {
    send(a, &signal_to(b_id, &answer("still here"))).await;
    let text = next_text(b).await;
    assert!(
        text.contains("still here"),
        "bystanders keep being served: {text}"
    );
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let lobby = lobby(|config| config.max_message_size = 1024).await;
    let (mut a, mut b, b_id) = bystanders(&lobby).await;
    let (mut bad, _) = join(&lobby, "/room").await;
    let big = signal_to(&b_id, &format!(r#"{{"Offer":"{}"}}"#, "x".repeat(2000)));
    let _ = bad.send(Message::Text(big.into())).await;
    expect_close(&mut bad, 1009, "1024 bytes").await;
    next_text(&mut a).await; // NewPeer(bad)
    next_text(&mut b).await; // NewPeer(bad)
    assert!(
        next_text(&mut a).await.contains("PeerLeft"),
        "the others see it leave"
    );
    next_text(&mut b).await;
    still_served(&mut a, &mut b, &b_id).await;
    let (_, metrics) = get(&lobby, "/metrics").await;
    assert!(
        metrics.contains(r#"peersync_lobby_closes_total{reason="message_too_big"} 1"#),
        "{metrics}"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn floods_close_with_4001() {
    let lobby = lobby(|config| {
        config.rate_per_sec = 5;
        config.rate_burst = 10;
    })
    .await;
    let (mut a, mut b, b_id) = bystanders(&lobby).await;
    let (mut flooder, _) = join(&lobby, "/other").await;
    for _ in 0..50 {
        if flooder
            .send(Message::Text(r#""KeepAlive""#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    expect_close(&mut flooder, 4001, "messages per second").await;
    still_served(&mut a, &mut b, &b_id).await;
    lobby.shutdown().await;
}

#[tokio::test]
async fn silence_closes_with_4000() {
    let lobby = lobby(|config| config.idle_timeout_secs = 1).await;
    let (mut quiet, _) = join(&lobby, "/room").await;
    let started = std::time::Instant::now();
    expect_close(&mut quiet, 4000, "nothing received").await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
    let (_, metrics) = get(&lobby, "/metrics").await;
    assert!(
        metrics.contains(r#"peersync_lobby_closes_total{reason="idle_timeout"} 1"#),
        "{metrics}"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn keep_alives_hold_the_connection_open() {
    let lobby = lobby(|config| config.idle_timeout_secs = 1).await;
    let (mut chatty, _) = join(&lobby, "/room").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        send(&mut chatty, r#""KeepAlive""#).await;
    }
    assert!(
        silent(&mut chatty, Duration::from_millis(300)).await,
        "still open after 1.6 s of keep-alives"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let lobby = lobby(|_| {}).await;
    let (mut a, mut b, b_id) = bystanders(&lobby).await;
    let (mut bad, _) = join(&lobby, "/other").await;
    bad.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect_close(&mut bad, 1003, "binary").await;
    still_served(&mut a, &mut b, &b_id).await;
    lobby.shutdown().await;
}

#[tokio::test]
async fn invalid_frames_close_with_1007() {
    let lobby = lobby(|_| {}).await;
    let (mut a, mut b, b_id) = bystanders(&lobby).await;
    for garbage in [
        "{not json",
        r#"{"Hello":1}"#,
        &signal_to(&b_id, r#"{"Bogus":"x"}"#),
        &signal_to("nope", r#"{"Offer":"x"}"#),
    ] {
        let (mut bad, _) = join(&lobby, "/other").await;
        send(&mut bad, garbage).await;
        expect_close(&mut bad, 1007, "invalid").await;
    }
    still_served(&mut a, &mut b, &b_id).await;
    let (_, metrics) = get(&lobby, "/metrics").await;
    assert!(
        metrics.contains(r#"peersync_lobby_closes_total{reason="invalid_frame"} 4"#),
        "{metrics}"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_never_upgrades_is_dropped_after_the_handshake_timeout() {
    let lobby = lobby(|config| config.handshake_timeout_secs = 1).await;
    let mut idle = tokio::net::TcpStream::connect(lobby.local_addr())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, idle.read(&mut buf))
        .await
        .expect("the lobby hangs up in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without a response: {read:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    lobby.shutdown().await;
}

#[tokio::test]
async fn connection_limits_refuse_with_503_and_429() {
    let lobby = lobby(|config| config.max_connections = 2).await;
    let (_a, _) = join(&lobby, "/room").await;
    let (_b, _) = join(&lobby, "/room").await;
    let (status, body) = refused(&lobby, "/room").await;
    assert_eq!(status, 503);
    assert!(body.contains("connection limit"), "{body}");
    lobby.shutdown().await;

    let lobby = crate::support::client::lobby(|config| config.max_connections_per_ip = 1).await;
    let (_a, _) = join(&lobby, "/room").await;
    let (status, body) = refused(&lobby, "/room").await;
    assert_eq!(status, 429);
    assert!(body.contains("your address"), "{body}");
    let (_, metrics) = get_when_allowed(&lobby, _a).await;
    assert!(
        metrics.contains(r#"peersync_lobby_refusals_total{reason="too_many_from_address"} 1"#),
        "{metrics}"
    );
    lobby.shutdown().await;
}

/// The per-address limit also counts HTTP connections: free the seat before asking.
async fn get_when_allowed(lobby: &Lobby, seat: Ws) -> (u16, String) {
    drop(seat);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(lobby, "/metrics").await;
        if status == 200 {
            return (status, body);
        }
        assert!(tokio::time::Instant::now() < deadline, "the seat is freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
