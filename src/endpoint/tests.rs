//! The handshake and liveness, between two endpoints wired by hand.
use super::*;
use crate::identity::PlayerIdentity;

fn exchange(
    from: &mut Endpoint,
    to: &mut Endpoint,
    from_id: PeerId,
    to_id: PeerId,
) -> Vec<Received> {
    let mut packets = Vec::new();
    from.flush(Duration::ZERO, &mut |p| packets.push(p));
    let mut out = Vec::new();
    for mut packet in packets {
        assert_eq!(packet.peer, to_id);
        packet.peer = from_id;
        to.handle_packet(Duration::ZERO, &packet, &mut out);
    }
    out
}

/// An endpoint in the room as `local`, playing as the player of `secret`.
fn endpoint(hash: u64, local: PeerId, secret: u8) -> Endpoint {
    let mut endpoint = Endpoint::new(
        SessionConfig::default(),
        hash,
        PlayerIdentity::from_secret([secret; 32]),
    );
    endpoint.set_local(Some(local));
    endpoint
}

fn pair(hash_a: u64, hash_b: u64) -> (Endpoint, Endpoint, PeerId, PeerId) {
    let (a_id, b_id) = (PeerId(1), PeerId(2));
    let mut a = endpoint(hash_a, a_id, 1);
    let mut b = endpoint(hash_b, b_id, 2);
    a.handle_link(Duration::ZERO, LinkEvent::Up(b_id));
    b.handle_link(Duration::ZERO, LinkEvent::Up(a_id));
    exchange(&mut a, &mut b, a_id, b_id);
    exchange(&mut b, &mut a, b_id, a_id);
    (a, b, a_id, b_id)
}

#[test]
fn matching_hellos_connect_both_sides() {
    let (mut a, mut b, a_id, b_id) = pair(42, 42);
    assert_eq!(
        a.drain_events().collect::<Vec<_>>(),
        vec![EndpointEvent::Connected(b_id)]
    );
    assert_eq!(
        b.drain_events().collect::<Vec<_>>(),
        vec![EndpointEvent::Connected(a_id)]
    );
    a.send(
        b_id,
        Channel::Reliable,
        FIRST_APP_KIND,
        Bytes::from_static(b"hi"),
        None,
    )
    .unwrap();
    let got = exchange(&mut a, &mut b, a_id, b_id);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, Bytes::from_static(b"hi"));
    a.handle_link(Duration::ZERO, LinkEvent::Down(b_id));
    assert_eq!(
        a.drain_events().collect::<Vec<_>>(),
        vec![EndpointEvent::Disconnected {
            peer: b_id,
            reason: Disconnect::LinkDown
        }]
    );
}

/// A's hello to B is lost (as a WebRTC stack can lose a new channel's first message); B
/// verified A's side of things never, yet A, having B's hello, sends it messages. B must hold
/// them, ask for the hello again, then read them in order: nobody refused, nothing lost.
#[test]
fn a_lost_hello_is_asked_for_again_and_what_came_before_it_is_read() {
    let (a_id, b_id) = (PeerId(1), PeerId(2));
    let mut a = endpoint(7, a_id, 1);
    let mut b = endpoint(7, b_id, 2);
    a.handle_link(Duration::ZERO, LinkEvent::Up(b_id));
    b.handle_link(Duration::ZERO, LinkEvent::Up(a_id));
    let mut lost = Vec::new();
    a.flush(Duration::ZERO, &mut |p| lost.push(p));
    assert_eq!(lost.len(), 1, "the hello went alone");
    exchange(&mut b, &mut a, b_id, a_id);
    assert_eq!(
        a.drain_events().collect::<Vec<_>>(),
        vec![EndpointEvent::Connected(b_id)]
    );
    for body in [&b"first"[..], b"second"] {
        a.send(
            b_id,
            Channel::Reliable,
            FIRST_APP_KIND,
            Bytes::copy_from_slice(body),
            None,
        )
        .unwrap();
    }
    let before = exchange(&mut a, &mut b, a_id, b_id);
    assert!(before.is_empty(), "nothing is read before the hello");
    assert!(
        b.drain_events().next().is_none(),
        "a peer whose hello is missing is not refused"
    );
    // B asks again; A says its hello again; B reads the held messages after it.
    exchange(&mut b, &mut a, b_id, a_id);
    let after = exchange(&mut a, &mut b, a_id, b_id);
    assert_eq!(
        b.drain_events().collect::<Vec<_>>(),
        vec![EndpointEvent::Connected(a_id)]
    );
    let bodies: Vec<&[u8]> = after.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, vec![&b"first"[..], b"second"]);
    // Its hello said again is a repeat, and ignored; a different one is still bad input.
    let repeat = encode_hello(7, &PlayerIdentity::from_secret([1; 32]), a_id, b_id);
    let other = encode_hello(7, &PlayerIdentity::from_secret([9; 32]), a_id, b_id);
    for hello in [repeat, other] {
        a.send(b_id, Channel::Reliable, KIND_HELLO, hello, None)
            .unwrap();
    }
    exchange(&mut a, &mut b, a_id, b_id);
    let events: Vec<_> = b.drain_events().collect();
    assert!(
        matches!(&events[..], [EndpointEvent::Rejected { peer, .. }] if *peer == a_id),
        "only the hello of another player is reported: {events:?}"
    );
}

/// What a peer may send before its hello is bounded by count as well as bytes: a flood of
/// empty messages is refused, not held without end.
#[test]
fn a_flood_before_the_hello_is_refused_not_held() {
    let (a_id, b_id) = (PeerId(1), PeerId(2));
    let mut a = endpoint(7, a_id, 1);
    let mut b = endpoint(7, b_id, 2);
    a.handle_link(Duration::ZERO, LinkEvent::Up(b_id));
    b.handle_link(Duration::ZERO, LinkEvent::Up(a_id));
    a.flush(Duration::ZERO, &mut |_| {}); // the hello, lost
    exchange(&mut b, &mut a, b_id, a_id);
    a.drain_events().for_each(drop);
    for _ in 0..10_000 {
        a.send(b_id, Channel::Reliable, FIRST_APP_KIND, Bytes::new(), None)
            .unwrap();
    }
    exchange(&mut a, &mut b, a_id, b_id);
    let events: Vec<_> = b.drain_events().collect();
    assert!(
        matches!(&events[..], [EndpointEvent::Refused { peer, .. }] if *peer == a_id),
        "10 000 empty messages before a hello should get the peer refused: {events:?}"
    );
}

#[test]
fn a_protocol_mismatch_is_refused_on_both_sides() {
    let (mut a, mut b, a_id, b_id) = pair(1, 2);
    for (endpoint, other) in [(&mut a, b_id), (&mut b, a_id)] {
        let events: Vec<_> = endpoint.drain_events().collect();
        assert!(
            matches!(&events[..], [EndpointEvent::Refused { peer, reason }]
                if *peer == other && reason.contains("protocol mismatch")),
            "expected a refusal naming the protocol, got {events:?}"
        );
        assert_eq!(
            endpoint.send(other, Channel::Reliable, FIRST_APP_KIND, Bytes::new(), None),
            Err(SendError::UnknownPeer(other))
        );
    }
}

#[test]
fn garbage_instead_of_a_hello_is_refused() {
    let mut a = endpoint(1, PeerId(1), 1);
    a.handle_link(Duration::ZERO, LinkEvent::Up(PeerId(9)));
    let mut out = Vec::new();
    a.handle_packet(
        Duration::ZERO,
        &Packet {
            peer: PeerId(9),
            channel: Channel::Reliable,
            bytes: Bytes::from_static(&[0xff, 0x00, 0x13]),
        },
        &mut out,
    );
    assert!(out.is_empty());
    let events: Vec<_> = a.drain_events().collect();
    assert!(
        matches!(events[0], EndpointEvent::Rejected { .. }),
        "{events:?}"
    );
}

#[test]
fn a_silent_peer_is_refused_after_the_hello_timeout() {
    let mut a = endpoint(1, PeerId(1), 1);
    a.handle_link(Duration::ZERO, LinkEvent::Up(PeerId(9)));
    a.flush(Duration::ZERO, &mut |_| {});
    a.flush(HELLO_TIMEOUT + Duration::from_secs(1), &mut |_| {});
    let events: Vec<_> = a.drain_events().collect();
    assert!(
        matches!(&events[..], [EndpointEvent::Refused { .. }]),
        "{events:?}"
    );
}

/// Everything `from` sends at `now`, delivered to `to` at `now`.
fn exchange_at(
    now: Duration,
    from: &mut Endpoint,
    to: &mut Endpoint,
    (from_id, to_id): (PeerId, PeerId),
) -> usize {
    let mut packets = Vec::new();
    from.flush(now, &mut |p| packets.push(p));
    let count = packets.len();
    for mut packet in packets {
        assert_eq!(packet.peer, to_id);
        packet.peer = from_id;
        to.handle_packet(now, &packet, &mut Vec::new());
    }
    count
}

fn disconnects(endpoint: &mut Endpoint) -> Vec<EndpointEvent> {
    endpoint
        .drain_events()
        .filter(|e| {
            matches!(
                e,
                EndpointEvent::Disconnected { .. }
                    | EndpointEvent::Stalled { .. }
                    | EndpointEvent::Isolated
            )
        })
        .collect()
}

#[test]
fn peers_that_keep_talking_stay_connected() {
    let (mut a, mut b, a_id, b_id) = pair(7, 7);
    for step in 1..=40 {
        let now = Duration::from_millis(250 * step);
        exchange_at(now, &mut a, &mut b, (a_id, b_id));
        exchange_at(now, &mut b, &mut a, (b_id, a_id));
    }
    assert_eq!(disconnects(&mut a), vec![], "b pinged all along");
    assert_eq!(disconnects(&mut b), vec![], "a pinged all along");
}

#[test]
fn a_silent_peer_is_dropped_after_the_peer_timeout_and_then_ignored() {
    let (mut a, mut b, a_id, b_id) = pair(7, 7);
    let timeout = a.config.peer_timeout;
    // From time zero everything b sends is lost (its uplink died); both keep running.
    let mut now = Duration::ZERO;
    while now <= timeout {
        exchange_at(now, &mut a, &mut b, (a_id, b_id));
        b.flush(now, &mut |_| {});
        assert_eq!(disconnects(&mut a), vec![], "b is silent for {now:?} only");
        now += Duration::from_millis(100);
    }
    a.flush(now, &mut |_| {});
    assert!(
        matches!(&disconnects(&mut a)[..], [EndpointEvent::Disconnected { peer, reason: Disconnect::Silent(silent) }]
            if *peer == b_id && *silent > timeout),
        "b should be dropped once silent for longer than {timeout:?}; one quiet peer is no sign \
         that a's own network failed, so a is not Isolated"
    );
    assert_eq!(
        a.send(b_id, Channel::Reliable, FIRST_APP_KIND, Bytes::new(), None),
        Err(SendError::UnknownPeer(b_id)),
        "a dropped peer cannot be sent to"
    );
    assert_eq!(
        exchange_at(now, &mut a, &mut b, (a_id, b_id)),
        0,
        "nothing goes to a dropped peer"
    );
    // b's uplink is back: what it sends is ignored, and counted.
    let later = now + b.config.heartbeat;
    b.flush(later, &mut |mut packet| {
        packet.peer = b_id;
        a.handle_packet(later, &packet, &mut Vec::new());
    });
    assert!(
        a.ignored_after_timeout(b_id) > 0,
        "ignored packets are counted"
    );
    a.flush(later, &mut |_| {});
    assert_eq!(disconnects(&mut a), vec![], "dropped once only");
    a.handle_link(now, LinkEvent::Down(b_id));
    assert_eq!(
        disconnects(&mut a),
        vec![],
        "its link going down is no news"
    );
}

#[test]
fn a_stall_of_our_own_drops_every_peer_and_asks_to_rejoin() {
    let (mut a, mut b, a_id, b_id) = pair(7, 7);
    let gap = a.config.peer_timeout + Duration::from_secs(1);
    exchange_at(Duration::ZERO, &mut a, &mut b, (a_id, b_id));
    // a's process is stopped; b's packets wait in a's socket and arrive when it resumes.
    exchange_at(gap, &mut b, &mut a, (b_id, a_id));
    a.flush(gap, &mut |_| {});
    assert_eq!(
        disconnects(&mut a),
        vec![
            EndpointEvent::Disconnected {
                peer: b_id,
                reason: Disconnect::Local
            },
            EndpointEvent::Stalled { gap }
        ],
        "b has dropped a by now, so a drops b and should rejoin"
    );
}

#[test]
fn a_stall_with_no_peers_is_no_news() {
    let mut a = endpoint(7, PeerId(1), 1);
    a.flush(Duration::ZERO, &mut |_| {});
    a.flush(Duration::from_secs(60), &mut |_| {});
    assert_eq!(
        disconnects(&mut a),
        vec![],
        "nobody to lose, no need to rejoin"
    );
}

/// This side's network drops: its two peers, last heard 300 ms apart (one had just pinged),
/// go silent in different frames. That is still "everyone at once": it must say `Isolated`,
/// once, so that it rejoins.
#[test]
fn peers_going_silent_a_few_frames_apart_still_mean_this_side_is_isolated() {
    let (a_id, b_id, c_id) = (PeerId(1), PeerId(2), PeerId(3));
    let mut a = endpoint(7, a_id, 1);
    let mut b = endpoint(7, b_id, 2);
    let mut c = endpoint(7, c_id, 3);
    a.handle_link(Duration::ZERO, LinkEvent::Up(b_id));
    a.handle_link(Duration::ZERO, LinkEvent::Up(c_id));
    b.handle_link(Duration::ZERO, LinkEvent::Up(a_id));
    c.handle_link(Duration::ZERO, LinkEvent::Up(a_id));
    exchange_at(Duration::ZERO, &mut b, &mut a, (b_id, a_id));
    exchange_at(Duration::ZERO, &mut c, &mut a, (c_id, a_id));
    let connected: Vec<_> = a.drain_events().collect();
    assert_eq!(connected.len(), 2, "a verified both: {connected:?}");
    let timeout = a.config.peer_timeout;
    let heard_c = Duration::from_millis(300);
    exchange_at(heard_c, &mut c, &mut a, (c_id, a_id));
    let mut events = Vec::new();
    let mut now = heard_c;
    while now <= timeout * 2 {
        a.flush(now, &mut |_| {});
        events.extend(disconnects(&mut a));
        now += Duration::from_millis(16);
    }
    let isolated = events
        .iter()
        .filter(|e| **e == EndpointEvent::Isolated)
        .count();
    assert_eq!(
        isolated, 1,
        "both peers silent within {:?} of each other, nobody left: Isolated once; got {events:?}",
        heard_c
    );
}
