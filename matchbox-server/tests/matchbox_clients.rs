//! Unmodified matchbox_socket clients find each other through the lobby and connect
//! peer-to-peer over WebRTC.

#[path = "support/client.rs"]
mod client;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use matchbox_socket::{PeerId, RtcIceServerConfig, WebRtcSocket, WebRtcSocketBuilder};
use peersync_lobby::Lobby;

fn socket(lobby: &Lobby, path: &str) -> WebRtcSocket {
    let (socket, message_loop) = WebRtcSocketBuilder::new(client::url(lobby, path))
        // No STUN on loopback: unreachable public hosts would only slow ICE down.
        .ice_server(RtcIceServerConfig {
            urls: vec![],
            username: None,
            credential: None,
        })
        .add_reliable_channel()
        .build();
    tokio::spawn(message_loop);
    socket
}

/// Polls every socket until each has `peers` connected peers.
async fn wait_for_peers(sockets: &mut [WebRtcSocket], peers: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for socket in sockets.iter_mut() {
            let _ = socket.try_update_peers();
        }
        if sockets.iter().all(|s| s.connected_peers().count() == peers) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "every socket should reach {peers} peer(s)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends one packet from every socket to each of its peers and checks each arrives.
async fn exchange(sockets: &mut [WebRtcSocket]) {
    let mut expected = Vec::new();
    for socket in sockets.iter_mut() {
        let me = socket.id().unwrap();
        let peers: Vec<PeerId> = socket.connected_peers().collect();
        for peer in peers {
            socket
                .channel_mut(0)
                .try_send(Bytes::from(me.to_string()), peer)
                .unwrap();
            expected.push((peer, me));
        }
    }
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.len() < expected.len() {
        for socket in sockets.iter_mut() {
            let me = socket.id().unwrap();
            for (from, packet) in socket.channel_mut(0).receive() {
                assert_eq!(
                    packet,
                    Bytes::from(from.to_string()),
                    "the packet is the sender's own"
                );
                received.push((me, from));
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "every packet should arrive"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    expected.sort();
    received.sort();
    assert_eq!(received, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_and_three_clients_connect_peer_to_peer() {
    let lobby = client::lobby(|_| {}).await;
    let mut pair = vec![socket(&lobby, "/two"), socket(&lobby, "/two")];
    wait_for_peers(&mut pair, 1).await;
    exchange(&mut pair).await;

    let mut trio = vec![
        socket(&lobby, "/three"),
        socket(&lobby, "/three"),
        socket(&lobby, "/three"),
    ];
    wait_for_peers(&mut trio, 2).await;
    exchange(&mut trio).await;
    lobby.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_2_makes_two_pairs_of_four_clients() {
    let lobby = client::lobby(|_| {}).await;
    let mut sockets: Vec<_> = (0..4).map(|_| socket(&lobby, "/duel?next=2")).collect();
    wait_for_peers(&mut sockets, 1).await;
    let mut pairs = BTreeSet::new();
    for socket in sockets.iter_mut() {
        let me = socket.id().unwrap();
        let other = socket.connected_peers().next().unwrap();
        pairs.insert(if me < other { (me, other) } else { (other, me) });
    }
    assert_eq!(
        pairs.len(),
        2,
        "four players make two disjoint pairs: {pairs:?}"
    );
    exchange(&mut sockets).await;
    lobby.shutdown().await;
}
