//! Two sessions on a simulated link, on virtual time: the round trip without frame time, the
//! clock offset under jitter, and the jitter itself.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;
use crate::rng::SplitMix64;
use crate::transport::memory::LinkConditioner;

const MS: Duration = Duration::from_millis(1);
/// 30 frames a second: each side flushes only this often.
const FRAME: Duration = Duration::from_micros(33_333);

/// A packet on its way: when it arrives, a tie-breaker, to which side, and what.
type InFlight = Reverse<(Duration, u64, usize, Channel, Bytes)>;

/// Runs two peers for `run` of true time over `link`. Each flushes once per [`FRAME`] (the
/// second a little over a third of a frame after the first) with a small unreliable message
/// queued, as a game sending its state each frame would, and reads each packet the moment it
/// arrives. Side `i`'s clock reads true time plus `clocks[i]`. Returns both sides' figures.
fn simulate(
    link: LinkConditioner,
    clocks: [Duration; 2],
    run: Duration,
    seed: u64,
) -> [LinkStats; 2] {
    let config = SessionConfig::default();
    let mut rng = SplitMix64::new(seed);
    let mut sessions = [PeerSession::new(clocks[0]), PeerSession::new(clocks[1])];
    let mut next_frame = [Duration::ZERO, FRAME * 2 / 5];
    let mut reliable_tails = [Duration::ZERO; 2];
    let mut wire: BinaryHeap<InFlight> = BinaryHeap::new();
    let mut order = 0u64;
    loop {
        let side = usize::from(next_frame[1] < next_frame[0]);
        let frame_at = next_frame[side];
        if let Some(Reverse((at, ..))) = wire.peek()
            && *at <= frame_at
        {
            let Some(Reverse((at, _, to, channel, packet))) = wire.pop() else {
                unreachable!("just peeked")
            };
            let (mut messages, mut errors) = (Vec::new(), Vec::new());
            sessions[to].handle_packet(
                clocks[to] + at,
                &config,
                channel,
                &packet,
                &mut messages,
                &mut errors,
            );
            assert!(errors.is_empty(), "the simulated link corrupts nothing");
            continue;
        }
        if frame_at > run {
            break;
        }
        let session = &mut sessions[side];
        session
            .send(
                &config,
                Channel::Unreliable,
                16,
                Bytes::from_static(&[7; 40]),
                None,
            )
            .expect("40 bytes fit");
        let mut sent = Vec::new();
        session.flush(clocks[side] + frame_at, &config, &mut |channel, packet| {
            sent.push((channel, packet))
        });
        for (channel, packet) in sent {
            let mut arrivals = Vec::new();
            link.schedule(
                &mut rng,
                channel,
                frame_at,
                &mut reliable_tails[side],
                &mut arrivals,
            );
            for at in arrivals {
                wire.push(Reverse((at, order, 1 - side, channel, packet.clone())));
                order += 1;
            }
        }
        next_frame[side] += FRAME;
    }
    [sessions[0].stats(), sessions[1].stats()]
}

#[test]
fn rtt_leaves_out_both_peers_frame_time_at_30_fps() {
    let link = LinkConditioner {
        latency: 40 * MS,
        ..LinkConditioner::PERFECT
    };
    let stats = simulate(link, [Duration::ZERO; 2], Duration::from_secs(5), 1);
    for (side, stats) in stats.iter().enumerate() {
        let rtt = stats.rtt.expect("acks came back");
        eprintln!(
            "side {side}: rtt {rtt:?}, ack delay {:?} (2 x 40 ms latency, 30 fps)",
            stats.ack_delay
        );
        assert!(
            rtt.abs_diff(80 * MS) < MS,
            "side {side}: the round trip should be the 80 ms on the wire, without the up to \
             33 ms the peer holds each packet until its next frame; got {rtt:?}"
        );
        assert!(
            stats.ack_delay > 5 * MS,
            "side {side}: the peer did hold packets until its next frame (so there was frame \
             time to leave out); got an ack delay of {:?}",
            stats.ack_delay
        );
    }
}

#[test]
fn clock_offset_is_found_within_a_millisecond_despite_symmetric_jitter() {
    let link = LinkConditioner {
        latency: 40 * MS,
        jitter: 5 * MS,
        ..LinkConditioner::PERFECT
    };
    // b's app started 5.432 1 s before a's: its clock reads that much more.
    let ahead = Duration::from_micros(5_432_100);
    let expected = ahead.as_secs_f64();
    // Several seeds, so that a pass is no lucky draw.
    for seed in 0..6 {
        let [a, b] = simulate(link, [Duration::ZERO, ahead], Duration::from_secs(20), seed);
        for (who, stats, expected) in [("a", a, expected), ("b", b, -expected)] {
            let offset = stats.clock_offset.expect("clock samples arrived");
            eprintln!(
                "seed {seed}, {who}: offset {offset:.6} s (injected {expected:.6} s, error \
                 {:.3} ms), jitter {:?}, rtt {:?}",
                (offset - expected) * 1e3,
                stats.jitter,
                stats.rtt
            );
            assert!(
                (offset - expected).abs() < 1e-3,
                "seed {seed}: {who} should see the other's clock {expected:.6} s off its own, \
                 within 1 ms, though each leg varies by up to ±5 ms; got {offset:.6} s"
            );
            // RFC 3550 jitter of delays uniform over ±J is the mean gap between two of them,
            // 2J/3, smoothed over only 16 packets, so it wanders.
            let jitter = stats.jitter.expect("timestamped packets arrived");
            assert!(
                (2 * MS..5 * MS).contains(&jitter),
                "seed {seed}: {who}: the jitter of delays uniform over ±5 ms should be about \
                 3.3 ms; got {jitter:?}"
            );
        }
    }
}

#[test]
fn a_steady_link_shows_no_jitter() {
    let link = LinkConditioner {
        latency: 25 * MS,
        ..LinkConditioner::PERFECT
    };
    let [a, _] = simulate(link, [Duration::ZERO; 2], Duration::from_secs(2), 3);
    let jitter = a.jitter.expect("timestamped packets arrived");
    assert!(
        jitter < Duration::from_micros(10),
        "every packet took 25 ms: there is no jitter to report, got {jitter:?}"
    );
}
