//! Unmodified matchbox_socket clients find each other through the lobby and connect
//! peer-to-peer over WebRTC.

use std::collections::BTreeSet;

use crate::support::client;
use crate::support::matchbox::{Peer, exchange, wait_for_peers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_and_three_clients_connect_peer_to_peer() {
    let lobby = client::lobby(|_| {}).await;
    let mut pair = vec![Peer::join(&lobby, "/two"), Peer::join(&lobby, "/two")];
    wait_for_peers(&mut pair, 1).await;
    exchange(&mut pair).await;

    let mut trio = vec![
        Peer::join(&lobby, "/three"),
        Peer::join(&lobby, "/three"),
        Peer::join(&lobby, "/three"),
    ];
    wait_for_peers(&mut trio, 2).await;
    exchange(&mut trio).await;
    lobby.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_2_makes_two_pairs_of_four_clients() {
    let lobby = client::lobby(|_| {}).await;
    let mut sockets: Vec<_> = (0..4).map(|_| Peer::join(&lobby, "/duel?next=2")).collect();
    wait_for_peers(&mut sockets, 1).await;
    let mut pairs = BTreeSet::new();
    for peer in sockets.iter_mut() {
        let me = peer.socket.id().unwrap();
        let other = peer.socket.connected_peers().next().unwrap();
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
