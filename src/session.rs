//! One remote peer's side of the protocol, without I/O: packets in, messages out, and back.
//!
//! The session knows nothing of sockets, clocks or Bevy: time comes in as an argument and bytes
//! go out through a callback, so it is deterministic and can be driven by tests and fuzzers.
//! Its reasons for dropping input are the packet-level [`InputError`]s.

mod clock;
mod frame;
mod reliable;
#[cfg(test)]
mod timing_tests;
mod unreliable;

use std::time::Duration;

use bytes::Bytes;

use self::clock::{ClockEstimator, Exchange, JitterEstimator};
use self::reliable::{ReliableReceiver, ReliableSender};
pub use self::unreliable::Delivery;
use self::unreliable::{Arrival, Received, UnreliableReceiver, UnreliableSender};
use crate::channel::Channel;
use crate::error::{InputError, SendError};

pub(crate) use self::frame::MAX_KIND;

/// Limits and timings of the peer protocol. Every peer of a room should use the same values.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Largest message, in bytes, sent or accepted on the reliable channel. Bigger ones are
    /// refused on send and dropped (and reported) on receipt. Default 1 MiB.
    pub max_message_size: usize,
    /// Largest packet on the reliable channel; small messages share packets and big ones are
    /// cut into pieces of this size. Default 1160 bytes, one SCTP chunk: webrtc-rs 0.21 moves
    /// single-chunk messages at 100–150 MiB/s on loopback but messages that SCTP must split
    /// at 5–30 MiB/s (16 KiB: 5 MiB/s; see BENCHMARKS.md). Browsers take up to 16 KiB.
    pub reliable_packet_size: usize,
    /// Largest packet on the unreliable channel. 1160 bytes is what one SCTP data chunk carries
    /// with webrtc-rs's MTU of 1191; a bigger message would be split by SCTP and lost whole
    /// when any piece is lost. Default 1160.
    pub unreliable_packet_size: usize,
    /// Longest quiet time on the unreliable channel before a ping is sent, which keeps the
    /// round-trip time and loss figures current. Default 250 ms.
    pub heartbeat: Duration,
    /// How long a connected peer may stay silent before it is dropped as gone. Every peer sends
    /// at least a ping per `heartbeat`, so silence this long means its process hangs, its
    /// network is gone, or it crashed in a way the lobby has not noticed yet (the lobby's own
    /// idle timeout is 30 s). If this peer's own frame loop stalls for longer, it assumes the
    /// others dropped it and rejoins the room (see
    /// [`DisconnectReason`](crate::DisconnectReason)). A browser tab in the background stops
    /// its frame loop, so it too is dropped after this long; so is a game that blocks its frame
    /// loop longer than this (loading a level on the main thread): raise it for such a game,
    /// or load off the main thread. A player dropped this way that comes back within
    /// [`resume_grace`](Self::resume_grace) is the same player with the same entities, so a
    /// short timeout costs a rejoin, not the player's state. Default 2 s: a host that hangs is
    /// replaced within about 2.5 s, and it is still eight heartbeats and far above an ordinary
    /// frame hitch. Tests that run a dozen debug-build apps on two loaded
    /// cores raise it (their threads can be starved for seconds).
    pub peer_timeout: Duration,
    /// How long a peer that finds itself alone in a room waits for others before it founds a
    /// session and acts as host (see [`ConnectedPeers::host`](crate::ConnectedPeers::host)).
    /// Peers that meet within it agree on one founder, so a game that spawns its world only
    /// once [`ConnectedPeers::is_settled`](crate::ConnectedPeers::is_settled) spawns it once.
    /// Default 1 s: a WebRTC connection on a LAN takes 0.2–1 s to open.
    pub settle_time: Duration,
    /// How long a peer may take to connect to the rest of the session before the host election
    /// treats the missing link as a partial mesh (and picks a host that reaches everyone).
    /// Default 5 s.
    pub mesh_grace: Duration,
    /// How long the others keep the entities of a player that lost its connection without a
    /// goodbye (killed, network lost, timed out), marked
    /// [`Suspended`](crate::replication::Suspended), waiting for it to come back under a new
    /// id as the same [`PlayerId`](crate::PlayerId) ([`PeerResumed`](crate::PeerResumed)).
    /// After it they are despawned, as when a player leaves, and what was being handed to it
    /// and not claimed goes back to its giver. World entities do not wait: the host takes them
    /// at once. Default 10 s.
    pub resume_grace: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            reliable_packet_size: 1160,
            unreliable_packet_size: 1160,
            heartbeat: Duration::from_millis(250),
            peer_timeout: Duration::from_secs(2),
            settle_time: Duration::from_secs(1),
            mesh_grace: Duration::from_secs(5),
            resume_grace: Duration::from_secs(10),
        }
    }
}

impl SessionConfig {
    /// Largest body of one unreliable message: a packet minus its header and frame header.
    pub fn max_unreliable_message(&self) -> usize {
        let header = 11; // flags, sequence number, ack, ack bits, ack delay
        let frame = 1 + 2 + 2; // tag, kind, length (both varints of at most two bytes here)
        self.unreliable_packet_size.saturating_sub(header + frame)
    }
}

/// Network figures of one link, as the session measures them; the net layer shows them to the
/// game as [`PeerStats`](crate::PeerStats).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LinkStats {
    /// Smoothed round-trip time, from the acknowledgements of unreliable packets, without the
    /// time the peer held them before acking (its frame time); `None` until the first one.
    pub(crate) rtt: Option<Duration>,
    /// How long the peer recently held our packets before its ack left (about its frame
    /// time): an ack comes back about `rtt + ack_delay` after the packet left.
    pub(crate) ack_delay: Duration,
    /// Interarrival jitter of the peer's timestamped unreliable packets (RFC 3550); `None`
    /// until two arrived.
    pub(crate) jitter: Option<Duration>,
    /// The peer's clock minus ours, in seconds; `None` until the first clock sample.
    pub(crate) clock_offset: Option<f64>,
    /// Share of our unreliable packets that went unacknowledged, smoothed, 0.0 to 1.0.
    pub(crate) packet_loss: f32,
    /// Bytes per second we sent to this peer over the last second (both channels).
    pub(crate) sent_bytes_per_sec: f32,
    /// Bytes per second received from this peer over the last second (both channels).
    pub(crate) received_bytes_per_sec: f32,
    /// Packets sent since the connection opened.
    pub(crate) packets_sent: u64,
    /// Packets received since the connection opened.
    pub(crate) packets_received: u64,
    /// Packets or messages from this peer that were dropped as bad input.
    pub(crate) rejected: u64,
}

#[derive(Debug, Default)]
struct StatsTracker {
    stats: LinkStats,
    window_start: Duration,
    window_sent: u64,
    window_received: u64,
}

impl StatsTracker {
    fn roll(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            let secs = elapsed.as_secs_f32();
            self.stats.sent_bytes_per_sec = self.window_sent as f32 / secs;
            self.stats.received_bytes_per_sec = self.window_received as f32 / secs;
            self.window_sent = 0;
            self.window_received = 0;
            self.window_start = now;
        }
    }
}

/// The protocol state for one remote peer.
#[derive(Debug)]
pub(crate) struct PeerSession {
    reliable_out: ReliableSender,
    reliable_in: ReliableReceiver,
    unreliable_out: UnreliableSender,
    unreliable_in: UnreliableReceiver,
    clock: ClockEstimator,
    jitter: JitterEstimator,
    stats: StatsTracker,
}

/// A message read from a peer: channel, kind, body.
pub(crate) type Incoming = (Channel, u16, Bytes);

impl PeerSession {
    pub(crate) fn new(now: Duration) -> Self {
        Self {
            reliable_out: ReliableSender::default(),
            reliable_in: ReliableReceiver::default(),
            unreliable_out: UnreliableSender::default(),
            unreliable_in: UnreliableReceiver::default(),
            clock: ClockEstimator::default(),
            jitter: JitterEstimator::default(),
            stats: StatsTracker {
                window_start: now,
                ..Default::default()
            },
        }
    }

    /// Queues a message for the next flush. On the unreliable channel a `token` asks to hear
    /// whether the message was delivered (see [`PeerSession::drain_deliveries`]).
    pub(crate) fn send(
        &mut self,
        config: &SessionConfig,
        channel: Channel,
        kind: u16,
        body: Bytes,
        token: Option<u64>,
    ) -> Result<(), SendError> {
        debug_assert!(kind <= MAX_KIND);
        match channel {
            Channel::Reliable => {
                if body.len() > config.max_message_size {
                    return Err(SendError::TooLarge {
                        size: body.len(),
                        max: config.max_message_size,
                        channel,
                    });
                }
                self.reliable_out.push(kind, body);
            }
            Channel::Unreliable => {
                let max = config.max_unreliable_message();
                if body.len() > max {
                    return Err(SendError::TooLarge {
                        size: body.len(),
                        max,
                        channel,
                    });
                }
                self.unreliable_out.push(kind, body, token);
            }
        }
        Ok(())
    }

    /// Reads one packet from the peer, which arrived at `now`.
    pub(crate) fn handle_packet(
        &mut self,
        now: Duration,
        config: &SessionConfig,
        channel: Channel,
        packet: &Bytes,
        messages: &mut Vec<Incoming>,
        errors: &mut Vec<InputError>,
    ) {
        self.stats.stats.packets_received += 1;
        self.stats.window_received += packet.len() as u64;
        let errors_before = errors.len();
        let mut batch = Vec::new();
        match channel {
            Channel::Reliable => {
                if packet.len() > config.reliable_packet_size {
                    errors.push(InputError::PacketTooLarge {
                        size: packet.len(),
                        max: config.reliable_packet_size,
                    });
                } else {
                    self.reliable_in.handle_packet(
                        packet,
                        config.max_message_size,
                        &mut batch,
                        errors,
                    );
                }
            }
            Channel::Unreliable => {
                match self.unreliable_in.handle_packet(
                    now,
                    packet,
                    config.unreliable_packet_size,
                    &mut batch,
                ) {
                    Ok(Received::Fresh(arrival)) => self.take_arrival(now, arrival),
                    Ok(Received::Duplicate) => {}
                    Err(error) => errors.push(error),
                }
            }
        }
        self.stats.stats.rejected += (errors.len() - errors_before) as u64;
        messages.extend(batch.into_iter().map(|(kind, body)| (channel, kind, body)));
    }

    /// Takes in a fresh unreliable packet's acks and clock: an ack of a packet still in flight
    /// that comes with the peer's clock is one NTP-style exchange.
    fn take_arrival(&mut self, now: Duration, arrival: Arrival) {
        let sent = arrival.ack.and_then(|ack| {
            let sent = self.unreliable_out.handle_ack(now, ack)?;
            Some((sent, ack.delay()))
        });
        if let Some(answered) = arrival.time {
            self.jitter.sample(answered, now);
            if let Some((sent, held)) = sent {
                self.clock.sample(Exchange {
                    sent,
                    held,
                    answered,
                    received: now,
                });
            }
        }
    }

    /// Counts input dropped by a layer above (unknown kinds, bodies that fail to decode).
    pub(crate) fn count_rejected(&mut self) {
        self.stats.stats.rejected += 1;
    }

    /// Sends everything queued, plus acks and pings the unreliable channel owes.
    pub(crate) fn flush(
        &mut self,
        now: Duration,
        config: &SessionConfig,
        emit: &mut impl FnMut(Channel, Bytes),
    ) {
        let mut sent = 0u64;
        let mut packets = 0u64;
        self.reliable_out
            .flush(config.reliable_packet_size, &mut |packet: Bytes| {
                sent += packet.len() as u64;
                packets += 1;
                emit(Channel::Reliable, packet);
            });
        self.unreliable_out.detect_losses(now);
        let acks = self.unreliable_in.take_acks(now);
        self.unreliable_out.flush(
            now,
            config.unreliable_packet_size,
            acks,
            config.heartbeat,
            &mut |packet: Bytes| {
                sent += packet.len() as u64;
                packets += 1;
                emit(Channel::Unreliable, packet);
            },
        );
        self.stats.stats.packets_sent += packets;
        self.stats.window_sent += sent;
        self.update_stats(now);
    }

    /// Sends only what is queued on the reliable channel.
    pub(crate) fn flush_reliable(
        &mut self,
        config: &SessionConfig,
        emit: &mut impl FnMut(Channel, Bytes),
    ) {
        let stats = &mut self.stats;
        self.reliable_out
            .flush(config.reliable_packet_size, &mut |packet: Bytes| {
                stats.window_sent += packet.len() as u64;
                stats.stats.packets_sent += 1;
                emit(Channel::Reliable, packet);
            });
    }

    fn update_stats(&mut self, now: Duration) {
        let (lost, total) = std::mem::take(&mut self.unreliable_out.resolved);
        for i in 0..total {
            let sample = if i < lost { 1.0 } else { 0.0 };
            self.stats.stats.packet_loss += (sample - self.stats.stats.packet_loss) / 32.0;
        }
        self.stats.stats.rtt = self.unreliable_out.rtt.smoothed();
        self.stats.stats.ack_delay = self.unreliable_out.rtt.ack_delay();
        self.stats.stats.jitter = self.jitter.jitter();
        self.stats.stats.clock_offset = self.clock.offset();
        self.stats.roll(now);
    }

    /// What became of unreliable messages sent with a token.
    pub(crate) fn drain_deliveries(&mut self) -> impl Iterator<Item = (u64, Delivery)> + '_ {
        self.unreliable_out.drain_deliveries()
    }

    pub(crate) fn stats(&self) -> LinkStats {
        self.stats.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pump(
        from: &mut PeerSession,
        to: &mut PeerSession,
        now: Duration,
    ) -> (Vec<Incoming>, Vec<InputError>) {
        let config = SessionConfig::default();
        let mut packets = Vec::new();
        from.flush(now, &config, &mut |channel, packet| {
            packets.push((channel, packet))
        });
        let mut messages = Vec::new();
        let mut errors = Vec::new();
        for (channel, packet) in packets {
            assert!(!packet.is_empty(), "no empty packet is ever sent");
            to.handle_packet(now, &config, channel, &packet, &mut messages, &mut errors);
        }
        (messages, errors)
    }

    #[test]
    fn unreliable_messages_over_the_limit_are_refused_when_sent() {
        let config = SessionConfig::default();
        let mut session = PeerSession::new(Duration::ZERO);
        let max = config.max_unreliable_message();
        assert!(
            session
                .send(
                    &config,
                    Channel::Unreliable,
                    16,
                    Bytes::from(vec![0; max]),
                    None
                )
                .is_ok()
        );
        assert_eq!(
            session.send(
                &config,
                Channel::Unreliable,
                16,
                Bytes::from(vec![0; max + 1]),
                None
            ),
            Err(SendError::TooLarge {
                size: max + 1,
                max,
                channel: Channel::Unreliable
            })
        );
        let mut packets = Vec::new();
        session.flush(Duration::ZERO, &config, &mut |c, p| packets.push((c, p)));
        assert_eq!(packets.len(), 1);
        assert!(
            packets[0].1.len() <= config.unreliable_packet_size,
            "the largest message still fits one packet"
        );
    }

    #[test]
    fn both_channels_deliver_and_rtt_is_measured() {
        let config = SessionConfig::default();
        let mut a = PeerSession::new(Duration::ZERO);
        let mut b = PeerSession::new(Duration::ZERO);
        a.send(
            &config,
            Channel::Reliable,
            16,
            Bytes::from_static(b"hello"),
            None,
        )
        .unwrap();
        a.send(
            &config,
            Channel::Unreliable,
            17,
            Bytes::from_static(b"world"),
            Some(5),
        )
        .unwrap();
        let (messages, errors) = pump(&mut a, &mut b, Duration::ZERO);
        assert!(errors.is_empty());
        assert_eq!(messages.len(), 2);
        // b acks in its next frame, 30 ms later, over an instant network: the round trip is
        // the floor, not b's frame time.
        pump(&mut b, &mut a, Duration::from_millis(30));
        assert_eq!(
            a.drain_deliveries().collect::<Vec<_>>(),
            vec![(5, Delivery::Delivered)]
        );
        a.flush(Duration::from_millis(30), &config, &mut |_, _| {});
        let stats = a.stats();
        assert_eq!(stats.rtt, Some(Duration::from_micros(100)));
        assert_eq!(stats.ack_delay, Duration::from_millis(30));
        assert!(
            stats.clock_offset.is_some_and(|offset| offset.abs() < 1e-6),
            "b's ack carried its clock, equal to ours: {:?}",
            stats.clock_offset
        );
    }

    #[test]
    fn oversized_packets_are_rejected_and_counted() {
        let config = SessionConfig::default();
        let mut session = PeerSession::new(Duration::ZERO);
        let mut errors = Vec::new();
        session.handle_packet(
            Duration::ZERO,
            &config,
            Channel::Unreliable,
            &Bytes::from(vec![0; 5000]),
            &mut Vec::new(),
            &mut errors,
        );
        assert_eq!(
            errors,
            vec![InputError::PacketTooLarge {
                size: 5000,
                max: 1160
            }]
        );
        assert_eq!(session.stats().rejected, 1);
    }
}
