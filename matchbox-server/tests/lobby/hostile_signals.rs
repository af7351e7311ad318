//! A room member sending garbage signals is closed with 4003 (1009 past the message size) and
//! hurts nobody: the real matchbox_socket peers of its room (whose native socket unwraps every
//! description it is sent) stay up, stay connected to each other, keep exchanging packets, and
//! still connect to a newcomer afterwards.

use crate::support::client::*;
use crate::support::matchbox::{Peer, exchange, wait_for_peers};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// Joins the room by hand and reads the offers the real peers make it (each member offers to a
/// newcomer); returns the socket and the offerers' ids.
async fn intruder(lobby: &peersync_lobby::Lobby, members: usize) -> (Ws, Vec<String>) {
    let (mut ws, _) = join(lobby, "/room").await;
    let mut offerers = Vec::new();
    while offerers.len() < members {
        let frame: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        if let Some(signal) = frame.get("Signal")
            && signal["data"].get("Offer").is_some()
        {
            offerers.push(signal["sender"].as_str().unwrap().to_owned());
        }
    }
    (ws, offerers)
}

async fn still_fine(peers: &mut [Peer]) {
    assert!(peers.iter().all(Peer::alive), "no socket panicked");
    wait_for_peers(peers, peers.len() - 1).await;
    exchange(peers).await;
}

fn garbage_sdp_offer() -> String {
    // Parses as SDP; unusable: no data channel, no ICE credentials, no fingerprint.
    serde_json::json!({"Offer": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_signals_close_their_sender_and_nobody_else() {
    let lobby = lobby(|_| {}).await;
    let mut peers = vec![Peer::join(&lobby, "/room"), Peer::join(&lobby, "/room")];
    wait_for_peers(&mut peers, 1).await;

    // The answer that froze every native peer of the room.
    let (mut ws, offerers) = intruder(&lobby, 2).await;
    for offerer in &offerers {
        let _ = ws
            .send(Message::Text(
                signal_to(offerer, r#"{"Answer":"not an sdp at all"}"#).into(),
            ))
            .await;
    }
    expect_close(&mut ws, 4003, "Answer is not usable SDP").await;
    still_fine(&mut peers).await;

    let padded = format!(
        "{}{}",
        sdp("actpass", "big"),
        "a=x-pad:0123456789\r\n".repeat(1000)
    );
    // (case, signal data, close code, part of the close reason)
    let cases = [
        (
            "bad offer",
            r#"{"Offer":"v=0 surely"}"#.to_owned(),
            4003,
            "Offer is not usable SDP",
        ),
        (
            "unsolicited offer of garbage SDP",
            garbage_sdp_offer(),
            4003,
            "only data-channel sections",
        ),
        (
            "candidate before any description",
            candidate(50000),
            4003,
            "before any offer or answer",
        ),
        (
            "malformed candidate",
            serde_json::json!({"IceCandidate": r#"{"candidate":"candidate:1 1 udp 1 nowhere 9 typ host","sdpMid":"0"}"#}).to_string(),
            4003,
            "bad IceCandidate",
        ),
        (
            "SDP over the size bound",
            serde_json::json!({ "Offer": padded }).to_string(),
            4003,
            "over the 16384 byte limit",
        ),
        (
            "1 MiB SDP",
            serde_json::json!({ "Offer": "v=0\r\n".repeat(200 * 1024) }).to_string(),
            1009,
            "messages are limited to",
        ),
    ];
    for (case, data, code, reason) in cases {
        let (mut ws, offerers) = intruder(&lobby, 2).await;
        if case == "malformed candidate" {
            // A valid answer first, so the candidate is judged on its own.
            send(&mut ws, &signal_to(&offerers[0], &answer("intruder"))).await;
        }
        let _ = ws
            .send(Message::Text(signal_to(&offerers[0], &data).into()))
            .await;
        expect_close(&mut ws, code, reason).await;
        still_fine(&mut peers).await;
    }

    // Handshakes still work: a newcomer connects to both.
    peers.push(Peer::join(&lobby, "/room"));
    wait_for_peers(&mut peers, 2).await;
    exchange(&mut peers).await;

    let (_, metrics) = get(&lobby, "/metrics").await;
    assert!(
        metrics.contains(r#"peersync_lobby_closes_total{reason="invalid_signal"} 6"#),
        "{metrics}"
    );
    drop(peers);
    lobby.shutdown().await;
}
