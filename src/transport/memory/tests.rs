//! The seeded network's own behaviour: links, latency, loss, order, faults.

use super::*;
use bytes::Bytes;

fn packet(to: PeerId, channel: Channel, byte: u8) -> Packet {
    Packet {
        peer: to,
        channel,
        bytes: Bytes::from(vec![byte]),
    }
}

fn received(transport: &mut MemoryTransport) -> TransportIo {
    let mut io = TransportIo::default();
    transport.receive(Duration::ZERO, &mut io);
    io
}

#[test]
fn joining_and_leaving_are_seen_by_everyone() {
    let net = MemoryNetwork::new(1);
    let mut a = net.join();
    let mut b = net.join();
    assert_eq!(received(&mut a).links, vec![LinkEvent::Up(b.id())]);
    assert_eq!(received(&mut b).links, vec![LinkEvent::Up(a.id())]);
    b.close();
    assert_eq!(received(&mut a).links, vec![LinkEvent::Down(b.id())]);
    assert_eq!(b.state(), SocketState::Closed);
}

#[test]
fn an_observer_with_a_departure_delay_learns_of_a_departure_late() {
    let net = MemoryNetwork::new(4);
    let mut a = net.join();
    let mut b = net.join();
    let mut c = net.join();
    net.delay_departures(a.id(), Duration::from_secs(6));
    let (_, _) = (received(&mut a), received(&mut b));
    c.close();
    assert_eq!(received(&mut b).links, vec![LinkEvent::Down(c.id())]);
    assert!(received(&mut a).links.is_empty(), "a is not told yet");
    net.advance(Duration::from_secs(6));
    assert_eq!(received(&mut a).links, vec![LinkEvent::Down(c.id())]);
}

#[test]
fn latency_holds_packets_until_the_clock_reaches_them() {
    let net = MemoryNetwork::new(2);
    net.set_conditioner(LinkConditioner {
        latency: Duration::from_millis(50),
        ..LinkConditioner::PERFECT
    });
    let mut a = net.join();
    let mut b = net.join();
    let mut io = TransportIo::default();
    io.outgoing.push(packet(b.id(), Channel::Unreliable, 1));
    a.send(&mut io);
    net.advance(Duration::from_millis(49));
    assert!(received(&mut b).incoming.is_empty());
    net.advance(Duration::from_millis(1));
    assert_eq!(received(&mut b).incoming.len(), 1);
}

#[test]
fn reliable_packets_keep_their_order_through_jitter_and_loss() {
    let net = MemoryNetwork::new(3);
    net.set_conditioner(LinkConditioner {
        loss: 0.3,
        latency: Duration::from_millis(40),
        jitter: Duration::from_millis(30),
        duplicate: 0.3,
        reorder: 0.3,
    });
    let mut a = net.join();
    let mut b = net.join();
    let mut io = TransportIo::default();
    for i in 0..200 {
        io.outgoing.push(packet(b.id(), Channel::Reliable, i));
    }
    a.send(&mut io);
    net.advance(Duration::from_secs(5));
    let bytes: Vec<u8> = received(&mut b)
        .incoming
        .iter()
        .map(|p| p.bytes[0])
        .collect();
    assert_eq!(bytes, (0..200).collect::<Vec<u8>>());
}

#[test]
fn unreliable_faults_follow_the_seed() {
    let run = |seed| {
        let net = MemoryNetwork::new(seed);
        net.set_conditioner(LinkConditioner {
            loss: 0.2,
            latency: Duration::from_millis(40),
            jitter: Duration::from_millis(30),
            duplicate: 0.1,
            reorder: 0.1,
        });
        let mut a = net.join();
        let mut b = net.join();
        let mut io = TransportIo::default();
        for i in 0..200 {
            io.outgoing.push(packet(b.id(), Channel::Unreliable, i));
        }
        a.send(&mut io);
        net.advance(Duration::from_secs(5));
        received(&mut b)
            .incoming
            .iter()
            .map(|p| p.bytes[0])
            .collect::<Vec<u8>>()
    };
    let first = run(7);
    assert_eq!(first, run(7), "same seed, same faults");
    assert_ne!(first, run(8));
    assert!(
        first.len() > 140 && first.len() < 200,
        "about 20 % lost, 10 % doubled: {}",
        first.len()
    );
    assert!(
        first.windows(2).any(|w| w[0] > w[1]),
        "some packets overtake others"
    );
}
