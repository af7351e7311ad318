//! A member bursting signals at a slow peer is limited or closed, never its victim: the victim
//! (here a client that stops reading for a while) stays in its room and gets what it is sent
//! once it reads again.

use crate::support::client::*;
use futures_util::SinkExt;
use peersync_lobby::Lobby;
use tokio::net::TcpSocket;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;

/// Joins with a small TCP receive buffer, so that while it does not read, the lobby's writes to
/// it block once the lobby's own send buffer is full (a few MiB at most) and its queue fills.
async fn slow_join(lobby: &Lobby, path: &str) -> (Ws, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(lobby.local_addr()).await.unwrap();
    let (mut ws, _) = client_async(
        url(lobby, path),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("the lobby accepts the join");
    let first: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let id = first["IdAssigned"].as_str().unwrap().to_owned();
    (ws, id)
}

/// Sends `count` signals as fast as it can, stopping if the lobby closes it.
async fn burst(ws: &mut Ws, receiver: &str, count: usize, data: &dyn Fn(usize) -> String) {
    for n in 0..count {
        if ws
            .send(Message::Text(signal_to(receiver, &data(n)).into()))
            .await
            .is_err()
        {
            break;
        }
    }
}

/// Reads everything the victim was sent until `marker` arrives; fails if it was closed.
async fn catch_up(victim: &mut Ws, marker: &str) -> usize {
    let mut frames = 0;
    loop {
        let text = next_text(victim).await;
        frames += 1;
        if text.contains(marker) {
            return frames;
        }
    }
}

fn count(metrics: &str, line: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line} in {metrics}"))
}

#[tokio::test]
async fn a_peer_flooding_another_is_closed_with_4004() {
    let lobby = lobby(|_| {}).await;
    let (mut victim, victim_id) = slow_join(&lobby, "/room").await;
    let (mut flooder, _) = join(&lobby, "/room").await;
    let (mut bystander, _) = join(&lobby, "/room").await;
    send(&mut flooder, &signal_to(&victim_id, &offer("flood"))).await;
    burst(&mut flooder, &victim_id, 400, &|n| {
        candidate(1000 + n as u16)
    })
    .await;
    let frame = closed(&mut flooder).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 4004, "{frame:?}");
    assert!(
        frame.reason.contains("more than 100 signals to peer"),
        "{frame:?}"
    );

    send(
        &mut bystander,
        &signal_to(&victim_id, &offer("after the flood")),
    )
    .await;
    catch_up(&mut victim, "after the flood").await;
    let (_, metrics) = get(&lobby, "/metrics").await;
    assert_eq!(
        count(
            &metrics,
            r#"peersync_lobby_closes_total{reason="flooding_peer"}"#
        ),
        1
    );
    assert_eq!(
        count(
            &metrics,
            r#"peersync_lobby_closes_total{reason="too_slow"}"#
        ),
        0,
        "the victim stays"
    );
    lobby.shutdown().await;
}

/// Polls the metrics until `done` holds for them, failing after [`WAIT`] with `what`.
async fn metrics_until(lobby: &Lobby, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, metrics) = get(lobby, "/metrics").await;
        if done(&metrics) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {WAIT:?}: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_flood_within_the_rate_only_fills_its_own_share_of_the_victims_queue() {
    // Signals within the pair and connection rates, each ~30 KiB, in rounds until the kernel
    // buffers between the lobby and a victim that does not read are full (4 MiB at most on
    // Linux's defaults) and the lobby's queue for the victim fills.
    const ROUND: u64 = 100;
    const MAX_SIGNALS: u64 = 2_000;
    let lobby = lobby(|config| {
        config.pair_signal_burst = 10_000;
        config.rate_burst = 10_000;
        config.max_sdp_size = 32 * 1024;
    })
    .await;
    let (mut victim, victim_id) = slow_join(&lobby, "/room").await;
    let (mut flooder, _) = join(&lobby, "/room").await;
    let (mut bystander, bystander_id) = join(&lobby, "/room").await;
    let padding = "a=x-pad:0123456789abcdef0123456789abcdef0123456789abcdef\r\n".repeat(500);
    let big = serde_json::json!({ "Offer": format!("{}{padding}", sdp("actpass", "big")) });
    let big = big.to_string();
    let mut sent = 0;
    let (metrics, dropped) = loop {
        burst(&mut flooder, &victim_id, ROUND as usize, &|_| big.clone()).await;
        sent += ROUND;
        // Every signal of the flood is either queued for the victim or dropped over its share.
        let metrics = metrics_until(&lobby, "the lobby should handle the whole flood", |m| {
            count(m, "peersync_lobby_signals_relayed_total")
                + count(m, "peersync_lobby_signals_over_share_total")
                >= sent
        })
        .await;
        let dropped = count(&metrics, "peersync_lobby_signals_over_share_total");
        if dropped > 0 {
            break (metrics, dropped);
        }
        assert!(
            sent < MAX_SIGNALS,
            "the flooder's signals past its share of the victim's queue should be dropped \
             within {MAX_SIGNALS} signals: {metrics}"
        );
    };
    for reason in ["too_slow", "flooding_peer"] {
        assert_eq!(
            count(
                &metrics,
                &format!(r#"peersync_lobby_closes_total{{reason="{reason}"}}"#)
            ),
            0,
            "nobody should be closed as {reason}"
        );
    }

    // Another member still reaches the victim past the flooder's share, and the victim gets
    // only what was queued for it, not the dropped signals.
    send(
        &mut bystander,
        &signal_to(&victim_id, &offer("after the flood")),
    )
    .await;
    let frames = catch_up(&mut victim, "after the flood").await as u64;
    assert!(
        frames <= sent - dropped + 3,
        "the victim should get at most the {} relayed signals (and two NewPeer and the \
         bystander's offer), got {frames}",
        sent - dropped
    );
    println!("{dropped} of {sent} signals dropped, {frames} frames reached the victim");

    // The flooder was limited, not closed: it still relays.
    send(
        &mut flooder,
        &signal_to(&bystander_id, &offer("still open")),
    )
    .await;
    assert!(
        next_text(&mut bystander).await.contains("still open"),
        "the flooder should still be connected and relayed"
    );
    let (_, metrics) = get(&lobby, "/metrics").await;
    assert_eq!(
        count(
            &metrics,
            r#"peersync_lobby_closes_total{reason="too_slow"}"#
        ),
        0,
        "the victim should stay"
    );
    lobby.shutdown().await;
}
