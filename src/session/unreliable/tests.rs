//! The unreliable channel on its own: packing, acks, loss, the ack delay and time frames.
use super::*;

const MAX: usize = 1160;
const MS: Duration = Duration::from_millis(1);
const HEARTBEAT: Duration = Duration::from_millis(250);

fn flush(
    sender: &mut UnreliableSender,
    now: Duration,
    ack: Option<AckHeader>,
    pending: bool,
) -> Vec<Bytes> {
    let mut out = Vec::new();
    let acks = Acks {
        ack,
        older: Vec::new(),
        pending,
    };
    sender.flush(now, MAX, acks, HEARTBEAT, &mut |p| out.push(p));
    out
}

#[test]
fn messages_are_packed_into_packets_under_the_limit() {
    let mut sender = UnreliableSender::default();
    for i in 0..10u8 {
        sender.push(16, Bytes::from(vec![i; 500]), None);
    }
    let packets = flush(&mut sender, Duration::ZERO, None, false);
    assert_eq!(
        packets.len(),
        5,
        "two 500-byte messages per 1160-byte packet"
    );
    assert!(packets.iter().all(|p| p.len() <= MAX));
    let mut receiver = UnreliableReceiver::default();
    let mut messages = Vec::new();
    for packet in &packets {
        receiver
            .handle_packet(Duration::ZERO, packet, MAX, &mut messages)
            .unwrap();
    }
    assert_eq!(messages.len(), 10);
    assert!(receiver.ack_pending);
}

#[test]
fn duplicates_and_stale_packets_are_dropped() {
    let mut sender = UnreliableSender::default();
    let mut receiver = UnreliableReceiver::default();
    let mut packets = Vec::new();
    for i in 0..200u8 {
        sender.push(16, Bytes::from(vec![i]), None);
        packets.extend(flush(&mut sender, Duration::ZERO, None, false));
    }
    let mut messages = Vec::new();
    assert_eq!(
        receiver.handle_packet(Duration::ZERO, &packets[199], MAX, &mut messages),
        Ok(Received::Fresh(Arrival::default()))
    );
    assert_eq!(
        receiver.handle_packet(Duration::ZERO, &packets[199], MAX, &mut messages),
        Ok(Received::Duplicate)
    );
    assert_eq!(
        receiver.handle_packet(Duration::ZERO, &packets[98], MAX, &mut messages),
        Ok(Received::Fresh(Arrival::default())),
        "a reordered packet inside the window (101 behind) is taken"
    );
    assert_eq!(
        receiver.handle_packet(Duration::ZERO, &packets[98], MAX, &mut messages),
        Ok(Received::Duplicate)
    );
    assert_eq!(
        receiver.handle_packet(Duration::ZERO, &packets[0], MAX, &mut messages),
        Ok(Received::Duplicate),
        "a packet 199 behind is too old to tell from a duplicate"
    );
    assert_eq!(messages.len(), 2);
}

#[test]
fn acks_deliver_tokens_and_measure_rtt_without_the_ack_delay() {
    let mut a = UnreliableSender::default();
    let mut b = UnreliableReceiver::default();
    a.push(16, Bytes::from_static(b"x"), Some(1));
    let packet = flush(&mut a, Duration::ZERO, None, false).remove(0);
    // 10 ms out, held 20 ms until b's next flush, 10 ms back.
    b.handle_packet(10 * MS, &packet, MAX, &mut Vec::new())
        .unwrap();
    let ack = b.take_acks(30 * MS).ack.unwrap();
    assert_eq!(ack.delay(), 20 * MS, "the ack says how long it waited");
    assert_eq!(a.handle_ack(40 * MS, ack), Some(Duration::ZERO));
    assert_eq!(
        a.drain_deliveries().collect::<Vec<_>>(),
        vec![(1, Delivery::Delivered)]
    );
    assert_eq!(
        a.rtt.smoothed(),
        Some(20 * MS),
        "the round trip is the 20 ms on the wire, not the 20 ms b held the packet"
    );
}

#[test]
fn an_overstated_ack_delay_cannot_make_the_rtt_zero() {
    let mut a = UnreliableSender::default();
    a.push(16, Bytes::from_static(b"x"), None);
    flush(&mut a, Duration::ZERO, None, false);
    let lie = AckHeader {
        ack: 0,
        bits: 0,
        delay: u16::MAX - 1,
    };
    a.handle_ack(30 * MS, lie);
    assert_eq!(
        a.rtt.smoothed(),
        Some(MIN_RTT_SAMPLE),
        "a delay longer than the whole round trip leaves the floor, not zero or less"
    );
    a.push(16, Bytes::from_static(b"y"), None);
    flush(&mut a, 40 * MS, None, false);
    let unknown = AckHeader {
        ack: 1,
        bits: 0,
        delay: u16::MAX,
    };
    assert_eq!(
        a.handle_ack(50 * MS, unknown),
        None,
        "the longest delay marks an ack that does not know its wait: no sample"
    );
    assert_eq!(a.rtt.smoothed(), Some(MIN_RTT_SAMPLE));
}

#[test]
fn our_clock_rides_on_a_fresh_ack_at_most_once_per_interval() {
    let ack = Some(AckHeader {
        ack: 0,
        bits: 0,
        delay: 0,
    });
    let mut a = UnreliableSender::default();
    let times = |packets: &[Bytes]| {
        let mut b = UnreliableReceiver::default();
        packets
            .iter()
            .filter_map(
                |p| match b.handle_packet(Duration::ZERO, p, MAX, &mut Vec::new()) {
                    Ok(Received::Fresh(arrival)) => arrival.time,
                    _ => None,
                },
            )
            .collect::<Vec<_>>()
    };
    for _ in 0..3 {
        a.push(16, Bytes::from(vec![0; 700]), None);
    }
    let packets = flush(&mut a, 100 * MS, ack, true);
    assert_eq!(packets.len(), 3);
    assert_eq!(times(&packets), vec![100 * MS], "once per flush");
    a.push(16, Bytes::from_static(b"x"), None);
    assert_eq!(
        times(&flush(&mut a, 120 * MS, ack, true)),
        Vec::<Duration>::new(),
        "not again within the interval"
    );
    a.push(16, Bytes::from_static(b"x"), None);
    assert_eq!(
        times(&flush(&mut a, 200 * MS, ack, false)),
        Vec::<Duration>::new(),
        "not when no fresh packet is acked: the peer could not pair it with a send time"
    );
    assert_eq!(
        times(&flush(&mut a, 210 * MS, ack, true)),
        vec![210 * MS],
        "a bare ack carries it too"
    );
}

#[test]
fn unacked_packets_are_lost_after_the_timeout() {
    let mut a = UnreliableSender::default();
    a.push(16, Bytes::from_static(b"x"), Some(7));
    flush(&mut a, Duration::ZERO, None, false);
    a.detect_losses(100 * MS);
    assert!(!a.has_deliveries(), "too early to call it lost");
    a.detect_losses(400 * MS);
    assert_eq!(
        a.drain_deliveries().collect::<Vec<_>>(),
        vec![(7, Delivery::Lost)]
    );
}

#[test]
fn a_packet_that_falls_out_of_the_ack_window_is_lost() {
    let mut a = UnreliableSender::default();
    let mut b = UnreliableReceiver::default();
    for token in 0..40 {
        a.push(16, Bytes::from_static(b"x"), Some(token));
        let packet = flush(&mut a, Duration::ZERO, None, false).remove(0);
        if token != 0 {
            b.handle_packet(Duration::ZERO, &packet, MAX, &mut Vec::new())
                .unwrap();
        }
    }
    a.handle_ack(MS, b.take_acks(Duration::ZERO).ack.unwrap());
    let deliveries: Vec<_> = a.drain_deliveries().collect();
    assert!(deliveries.contains(&(0, Delivery::Lost)));
    assert_eq!(
        deliveries
            .iter()
            .filter(|(_, d)| *d == Delivery::Delivered)
            .count(),
        33
    );
}

#[test]
fn ack_only_packets_do_not_ask_for_acks() {
    let mut a = UnreliableSender::default();
    let mut b = UnreliableReceiver::default();
    // First flush with nothing queued sends a ping (nothing asked for an ack yet).
    let ping = flush(&mut a, Duration::ZERO, None, false).remove(0);
    b.handle_packet(Duration::ZERO, &ping, MAX, &mut Vec::new())
        .unwrap();
    assert!(b.ack_pending, "a ping asks for an ack");
    let ack_only = flush(
        &mut a,
        MS,
        Some(AckHeader {
            ack: 0,
            bits: 0,
            delay: 0,
        }),
        true,
    )
    .remove(0);
    let mut c = UnreliableReceiver::default();
    c.handle_packet(Duration::ZERO, &ack_only, MAX, &mut Vec::new())
        .unwrap();
    assert!(!c.ack_pending, "a bare ack packet is not acked back");
    assert!(
        flush(&mut a, 2 * MS, None, false).is_empty(),
        "nothing to say, no packet"
    );
}

#[test]
fn sequence_numbers_wrap() {
    let mut sender = UnreliableSender {
        next_seq: u16::MAX - 2,
        ..Default::default()
    };
    let mut receiver = UnreliableReceiver::default();
    let mut messages = Vec::new();
    for _ in 0..6 {
        sender.push(16, Bytes::from_static(b"x"), None);
        for packet in flush(&mut sender, Duration::ZERO, None, false) {
            assert!(matches!(
                receiver.handle_packet(Duration::ZERO, &packet, MAX, &mut messages),
                Ok(Received::Fresh(_))
            ));
        }
    }
    assert_eq!(messages.len(), 6);
    let ack = receiver.take_acks(Duration::ZERO).ack.unwrap();
    assert_eq!(ack.ack, 2);
    assert_eq!(ack.bits & 0b11111, 0b11111);
}

#[test]
fn a_lost_ack_of_an_older_range_leaves_its_packets_to_the_timeout() {
    let mut a = UnreliableSender::default();
    let mut b = UnreliableReceiver::default();
    for i in 0..50u64 {
        a.push(16, Bytes::from(vec![0; 1000]), Some(i));
    }
    let packets = flush(&mut a, Duration::ZERO, None, false);
    for packet in &packets {
        b.handle_packet(5 * MS, packet, MAX, &mut Vec::new())
            .unwrap();
    }
    let acks = b.take_acks(20 * MS);
    assert_eq!(acks.older.len(), 1, "17 packets beyond the usual ack's 33");
    // The older range's ack is lost: only the usual one arrives.
    a.handle_ack(30 * MS, acks.ack.unwrap());
    let delivered: Vec<(u64, Delivery)> = a.drain_deliveries().collect();
    assert_eq!(delivered.len(), 33, "the usual ack's packets are delivered");
    assert!(
        delivered.iter().all(|(_, d)| *d == Delivery::Delivered),
        "packets of the same flush out of its window are not called lost at once"
    );
    a.detect_losses(10 * HEARTBEAT);
    assert_eq!(
        a.drain_deliveries().count(),
        17,
        "the timeout settles them (as lost: nothing said they arrived)"
    );
}

#[test]
fn a_packet_at_the_edge_of_the_window_is_acked_without_reaching_past_it() {
    let mut a = UnreliableSender {
        next_seq: 72,
        ..Default::default()
    };
    let mut b = UnreliableReceiver::default();
    a.push(16, Bytes::from_static(b"old"), None);
    let old = flush(&mut a, Duration::ZERO, None, false).remove(0);
    a.next_seq = 200;
    a.push(16, Bytes::from_static(b"new"), None);
    let new = flush(&mut a, Duration::ZERO, None, false).remove(0);
    let mut messages = Vec::new();
    b.handle_packet(MS, &new, MAX, &mut messages).unwrap();
    b.handle_packet(MS, &old, MAX, &mut messages).unwrap();
    let acks = b.take_acks(2 * MS);
    assert_eq!(
        acks.older,
        vec![AckHeader {
            ack: 72,
            bits: 0,
            delay: u16::MAX
        }],
        "the packet 128 behind is acked alone: nothing older is known"
    );
}

#[test]
fn a_hundred_packets_in_one_frame_are_all_acknowledged() {
    let mut a = UnreliableSender::default();
    let mut b = UnreliableReceiver::default();
    for i in 0..100u64 {
        a.push(16, Bytes::from(vec![0; 1000]), Some(i));
    }
    let packets = flush(&mut a, Duration::ZERO, None, false);
    assert_eq!(packets.len(), 100, "one 1000-byte message per packet");
    let mut messages = Vec::new();
    for packet in &packets {
        b.handle_packet(5 * MS, packet, MAX, &mut messages).unwrap();
    }
    // The receiver's flush: its older acks first, then its usual one on a packet of its own.
    let mut back = UnreliableSender::default();
    let acks = b.take_acks(20 * MS);
    assert_eq!(
        acks.older.len(),
        3,
        "the 67 packets beyond the usual ack's 33, in ranges of 33"
    );
    let mut replies = Vec::new();
    back.flush(20 * MS, MAX, acks, HEARTBEAT, &mut |p| replies.push(p));
    let mut sampled = Vec::new();
    let mut fresh = UnreliableReceiver::default();
    for reply in &replies {
        let Ok(Received::Fresh(arrival)) =
            fresh.handle_packet(30 * MS, reply, MAX, &mut Vec::new())
        else {
            panic!("the replies read");
        };
        if let Some(sent) = a.handle_ack(30 * MS, arrival.ack.unwrap()) {
            sampled.push(sent);
        }
    }
    let delivered: Vec<(u64, Delivery)> = a.drain_deliveries().collect();
    assert_eq!(delivered.len(), 100, "every packet's fate is known");
    assert!(
        delivered.iter().all(|(_, d)| *d == Delivery::Delivered),
        "every packet arrived, none is called lost: {:?}",
        delivered
            .iter()
            .filter(|(_, d)| *d == Delivery::Lost)
            .count()
    );
    assert_eq!(
        sampled.len(),
        1,
        "only the usual ack, which knows its wait, gives a round-trip sample"
    );
}
