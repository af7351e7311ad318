//! A link conditioner around any transport: the faults of a real network (loss, delay, jitter,
//! duplication, reordering) applied to this peer's packets both ways, so that a developer on a
//! LAN, or on one machine, sees what players on the internet will see.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use super::memory::LinkConditioner;
use super::{Packet, SocketState, Transport, TransportIo};
use crate::peer::PeerId;
use crate::rng::SplitMix64;

/// Packets held at once, each way; beyond it new ones are dropped (and counted), so a huge
/// latency cannot make the queue grow without bound.
const MAX_HELD: usize = 1 << 16;

#[derive(Debug)]
struct Held {
    at: Duration,
    /// Ties broken by arrival, so equal times keep their order.
    order: u64,
    packet: Packet,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// One direction's packets waiting for their time.
#[derive(Debug, Default)]
struct Queue {
    held: BinaryHeap<Reverse<Held>>,
    /// When each peer's last reliable packet is released: reliable packets keep their order.
    reliable_tail: HashMap<PeerId, Duration>,
}

impl Queue {
    /// Moves the packets due at `now` to `out`, in the order they are due.
    fn release(&mut self, now: Duration, out: &mut Vec<Packet>) {
        while self.held.peek().is_some_and(|Reverse(held)| held.at <= now) {
            if let Some(Reverse(held)) = self.held.pop() {
                out.push(held.packet);
            }
        }
    }
}

/// Wraps a transport (e.g. [`MatchboxTransport`](super::MatchboxTransport)) and applies a
/// [`LinkConditioner`] to everything it sends and receives.
///
/// Both directions are conditioned, so one peer with 50 ms of latency sees round trips of at
/// least 100 ms to everyone. Losses on the reliable channel become delays (as a resend would),
/// so reliable messages still arrive, in order.
///
/// ```no_run
/// use std::time::Duration;
/// use bevy_peersync::transport::{ConditionedTransport, MatchboxTransport};
/// use bevy_peersync::{LinkConditioner, MatchboxConfig, PeerSocket};
///
/// let bad_wifi = LinkConditioner {
///     loss: 0.02,
///     latency: Duration::from_millis(40),
///     jitter: Duration::from_millis(15),
///     ..LinkConditioner::PERFECT
/// };
/// let transport = MatchboxTransport::new(MatchboxConfig::new("ws://127.0.0.1:3536/room"));
/// let socket = PeerSocket::new(ConditionedTransport::new(transport, bad_wifi, 7));
/// ```
pub struct ConditionedTransport<T> {
    inner: T,
    conditioner: LinkConditioner,
    rng: SplitMix64,
    /// The time of the last `receive` (`send` is not given one).
    now: Duration,
    order: u64,
    incoming: Queue,
    outgoing: Queue,
    dropped: u64,
}

impl<T: Transport> ConditionedTransport<T> {
    /// Conditions `inner`'s packets with `conditioner`, drawing the faults from `seed`.
    pub fn new(inner: T, conditioner: LinkConditioner, seed: u64) -> Self {
        Self {
            inner,
            conditioner,
            rng: SplitMix64::new(seed),
            now: Duration::ZERO,
            order: 0,
            incoming: Queue::default(),
            outgoing: Queue::default(),
            dropped: 0,
        }
    }

    /// Changes the faults from now on.
    pub fn set_conditioner(&mut self, conditioner: LinkConditioner) {
        self.conditioner = conditioner;
    }

    /// Packets dropped because too many were held at once (not the simulated losses).
    pub fn dropped_over_capacity(&self) -> u64 {
        self.dropped
    }

    fn hold(&mut self, outgoing: bool, packets: Vec<Packet>) {
        let mut times = Vec::with_capacity(2);
        for packet in packets {
            let queue = if outgoing {
                &mut self.outgoing
            } else {
                &mut self.incoming
            };
            if queue.held.len() >= MAX_HELD {
                self.dropped += 1;
                if self.dropped == 1 {
                    tracing::warn!(
                        "link conditioner: over {MAX_HELD} packets held one way; dropping more"
                    );
                }
                continue;
            }
            times.clear();
            let tail = queue.reliable_tail.entry(packet.peer).or_default();
            self.conditioner
                .schedule(&mut self.rng, packet.channel, self.now, tail, &mut times);
            for &at in &times {
                self.order += 1;
                queue.held.push(Reverse(Held {
                    at,
                    order: self.order,
                    packet: packet.clone(),
                }));
            }
        }
    }
}

impl<T: Transport> Transport for ConditionedTransport<T> {
    fn receive(&mut self, now: Duration, io: &mut TransportIo) {
        self.now = now;
        let first = io.incoming.len();
        self.inner.receive(now, io);
        let arrived: Vec<Packet> = io.incoming.drain(first..).collect();
        self.hold(false, arrived);
        self.incoming.release(now, &mut io.incoming);
    }

    fn send(&mut self, io: &mut TransportIo) {
        let queued = std::mem::take(&mut io.outgoing);
        self.hold(true, queued);
        self.outgoing.release(self.now, &mut io.outgoing);
        self.inner.send(io);
    }

    fn state(&self) -> SocketState {
        self.inner.state()
    }

    fn close(&mut self) {
        self.incoming = Queue::default();
        self.outgoing = Queue::default();
        self.inner.close();
    }

    fn rejoin(&mut self) -> bool {
        self.incoming = Queue::default();
        self.outgoing = Queue::default();
        self.inner.rejoin()
    }

    fn relayed(&self, peer: PeerId) -> Option<bool> {
        self.inner.relayed(peer)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::channel::Channel;

    /// A transport that hands back what it was given to send, as if from the same peer.
    #[derive(Default)]
    struct Echo {
        sent: Vec<Packet>,
    }

    impl Transport for Echo {
        fn receive(&mut self, _now: Duration, io: &mut TransportIo) {
            io.incoming.append(&mut self.sent);
        }
        fn send(&mut self, io: &mut TransportIo) {
            self.sent.append(&mut io.outgoing);
        }
        fn state(&self) -> SocketState {
            SocketState::Connected(PeerId(1))
        }
        fn close(&mut self) {}
    }

    fn packet(channel: Channel, n: u8) -> Packet {
        Packet {
            peer: PeerId(2),
            channel,
            bytes: Bytes::from(vec![n]),
        }
    }

    /// Sends `packets` at time zero and runs the transport every 10 ms until `until`; returns
    /// what was received, with the time each arrived.
    fn run(
        conditioner: LinkConditioner,
        packets: Vec<Packet>,
        until: Duration,
    ) -> Vec<(Duration, u8)> {
        let mut transport = ConditionedTransport::new(Echo::default(), conditioner, 3);
        let mut io = TransportIo::default();
        transport.receive(Duration::ZERO, &mut io);
        io.outgoing = packets;
        transport.send(&mut io);
        let mut got = Vec::new();
        let mut now = Duration::ZERO;
        while now <= until {
            transport.receive(now, &mut io);
            got.extend(io.incoming.drain(..).map(|p| (now, p.bytes[0])));
            transport.send(&mut io);
            now += Duration::from_millis(10);
        }
        got
    }

    #[test]
    fn latency_applies_each_way() {
        let conditioner = LinkConditioner {
            latency: Duration::from_millis(50),
            ..LinkConditioner::PERFECT
        };
        let got = run(
            conditioner,
            vec![packet(Channel::Unreliable, 1)],
            Duration::from_millis(300),
        );
        assert_eq!(got.len(), 1, "the packet arrives once");
        // 50 ms out, 50 ms back in, and one 10 ms step of the loop for the echo.
        assert!(
            (Duration::from_millis(100)..=Duration::from_millis(120)).contains(&got[0].0),
            "the round trip should take 100 ms plus a step, took {:?}",
            got[0].0
        );
    }

    #[test]
    fn unreliable_packets_are_lost_and_reliable_ones_arrive_in_order() {
        let conditioner = LinkConditioner {
            loss: 0.3,
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
            ..LinkConditioner::PERFECT
        };
        let unreliable = (0..200).map(|n| packet(Channel::Unreliable, n)).collect();
        let lost = 200 - run(conditioner, unreliable, Duration::from_secs(1)).len();
        assert!(
            (60..=150).contains(&lost),
            "about half are lost one way or the other (1 - 0.7²), lost {lost}"
        );
        let reliable = (0..200).map(|n| packet(Channel::Reliable, n)).collect();
        let got: Vec<u8> = run(conditioner, reliable, Duration::from_secs(5))
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(
            got,
            (0..200).collect::<Vec<u8>>(),
            "every reliable packet arrives, in order"
        );
    }
}
