//! Real matchbox_socket peers for the lobby's tests: sockets whose message loops run on the
//! test's runtime, and helpers that wait for them to connect and check they exchange packets.

use std::time::Duration;

use bytes::Bytes;
use matchbox_socket::{PeerId, RtcIceServerConfig, WebRtcSocket, WebRtcSocketBuilder};
use peersync_lobby::Lobby;
use tokio::task::JoinHandle;

/// A socket and the task polling its message loop: a panic in the loop (what a hostile
/// signal did before the lobby checked them) ends the task.
pub struct Peer {
    pub socket: WebRtcSocket,
    pub message_loop: JoinHandle<()>,
}

impl Peer {
    pub fn join(lobby: &Lobby, path: &str) -> Peer {
        let (socket, message_loop) = WebRtcSocketBuilder::new(super::client::url(lobby, path))
            // No STUN on loopback: unreachable public hosts would only slow ICE down.
            .ice_server(RtcIceServerConfig {
                urls: vec![],
                username: None,
                credential: None,
            })
            .add_reliable_channel()
            .build();
        let message_loop = tokio::spawn(async move {
            let _ = message_loop.await;
        });
        Peer {
            socket,
            message_loop,
        }
    }

    /// Whether its message loop is still running (it has not panicked nor ended).
    pub fn alive(&self) -> bool {
        !self.message_loop.is_finished()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.message_loop.abort();
    }
}

/// Polls every socket until each has `peers` connected peers.
pub async fn wait_for_peers(peers: &mut [Peer], count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for peer in peers.iter_mut() {
            let _ = peer.socket.try_update_peers();
        }
        if peers
            .iter()
            .all(|p| p.socket.connected_peers().count() == count)
        {
            return;
        }
        assert!(
            peers.iter().all(Peer::alive),
            "a socket's message loop ended"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "every socket should reach {count} peer(s)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends one packet from every socket to each of its peers and checks each arrives.
pub async fn exchange(peers: &mut [Peer]) {
    let mut expected = Vec::new();
    for peer in peers.iter_mut() {
        let me = peer.socket.id().unwrap();
        let others: Vec<PeerId> = peer.socket.connected_peers().collect();
        for other in others {
            peer.socket
                .channel_mut(0)
                .try_send(Bytes::from(me.to_string()), other)
                .unwrap();
            expected.push((other, me));
        }
    }
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.len() < expected.len() {
        for peer in peers.iter_mut() {
            let me = peer.socket.id().unwrap();
            for (from, packet) in peer.socket.channel_mut(0).receive() {
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
