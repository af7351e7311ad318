//! The unreliable channel: sequence numbers, acknowledgements, loss detection, de-duplication.
//!
//! Every unreliable packet carries a sequence number and acknowledges the newest packets
//! received from the other side (the newest one plus a 32-bit window before it). The sender
//! learns which of its packets arrived, which gives the round-trip time, the loss rate, and
//! lets the layers above attach a token to a message and hear whether it was delivered or lost,
//! which is how replication resends lost state without the reliable channel's head-of-line
//! blocking.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::frame::{
    AckHeader, Frame, UnreliableHeader, message_overhead, read_frame, write_message, write_ping,
};
use crate::error::InputError;
use crate::wire::Reader;

/// How many packets back the duplicate filter remembers.
const WINDOW: u16 = 64;
/// How many packets may wait for an ack before the oldest is given up as lost.
const MAX_IN_FLIGHT: usize = 1024;

/// What became of a message sent with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The packet that carried it was acknowledged.
    Delivered,
    /// The packet that carried it was not acknowledged in time: assume it is gone.
    Lost,
}

#[derive(Debug)]
struct InFlight {
    seq: u16,
    sent_at: Duration,
    tokens: Vec<u64>,
}

/// A round-trip estimator in the manner of RFC 6298.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimator {
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    pub(crate) fn smoothed(&self) -> Option<Duration> {
        self.srtt
    }

    /// How long to wait for an ack before calling a packet lost. The floor leaves room for the
    /// peer's frame time: it acks in its next frame, not at once.
    pub(crate) fn loss_timeout(&self) -> Duration {
        match self.srtt {
            None => Duration::from_millis(300),
            Some(srtt) => {
                srtt + (self.rttvar * 4).max(Duration::from_millis(10)) + Duration::from_millis(20)
            }
        }
    }
}

/// Sending side of the unreliable channel.
#[derive(Debug, Default)]
pub(crate) struct UnreliableSender {
    next_seq: u16,
    queue: Vec<(u16, Bytes, Option<u64>)>,
    in_flight: VecDeque<InFlight>,
    deliveries: Vec<(u64, Delivery)>,
    pub(crate) rtt: RttEstimator,
    /// Packets whose fate is known, as (lost, total), since the stats last looked.
    pub(crate) resolved: (u32, u32),
    last_eliciting_send: Option<Duration>,
}

impl UnreliableSender {
    pub(crate) fn push(&mut self, kind: u16, body: Bytes, token: Option<u64>) {
        self.queue.push((kind, body, token));
    }

    pub(crate) fn drain_deliveries(&mut self) -> std::vec::Drain<'_, (u64, Delivery)> {
        self.deliveries.drain(..)
    }

    #[cfg(test)]
    pub(crate) fn has_deliveries(&self) -> bool {
        !self.deliveries.is_empty()
    }

    /// Takes in the acknowledgements of a packet from the other side.
    pub(crate) fn handle_ack(&mut self, now: Duration, ack: AckHeader) {
        let mut newest_sampled = false;
        let mut index = 0;
        while index < self.in_flight.len() {
            let seq = self.in_flight[index].seq;
            let behind = ack.ack.wrapping_sub(seq) as i16;
            let acked =
                behind == 0 || (1..=32).contains(&behind) && ack.bits & (1 << (behind - 1)) != 0;
            if acked {
                let packet = self.in_flight.remove(index).expect("index is in range");
                if behind == 0 && !newest_sampled {
                    newest_sampled = true;
                    self.rtt.sample(now.saturating_sub(packet.sent_at));
                }
                self.resolve(packet, Delivery::Delivered);
                continue;
            }
            if behind > 32 {
                // Out of the ack window without having been acked: it is not coming.
                let packet = self.in_flight.remove(index).expect("index is in range");
                self.resolve(packet, Delivery::Lost);
                continue;
            }
            index += 1;
        }
    }

    /// Calls packets lost that have waited longer than the loss timeout.
    pub(crate) fn detect_losses(&mut self, now: Duration) {
        let timeout = self.rtt.loss_timeout();
        while let Some(oldest) = self.in_flight.front() {
            if now.saturating_sub(oldest.sent_at) < timeout && self.in_flight.len() <= MAX_IN_FLIGHT
            {
                break;
            }
            let packet = self.in_flight.pop_front().expect("front exists");
            self.resolve(packet, Delivery::Lost);
        }
    }

    fn resolve(&mut self, packet: InFlight, delivery: Delivery) {
        self.resolved.1 += 1;
        if delivery == Delivery::Lost {
            self.resolved.0 += 1;
        }
        self.deliveries
            .extend(packet.tokens.into_iter().map(|token| (token, delivery)));
    }

    /// Packs queued messages into packets of at most `max_packet` bytes. When nothing is queued
    /// it still sends a bare packet if `ack` must reach the peer, or a ping if nothing that asks
    /// for an ack went out for `heartbeat`, so round-trip and loss figures stay fresh.
    pub(crate) fn flush(
        &mut self,
        now: Duration,
        max_packet: usize,
        ack: Option<AckHeader>,
        ack_pending: bool,
        heartbeat: Duration,
        emit: &mut impl FnMut(Bytes),
    ) {
        let mut packet = Vec::new();
        let mut tokens = Vec::new();
        let mut header_len = 0;
        let queue = std::mem::take(&mut self.queue);
        let mut sent_any = false;
        for (kind, body, token) in queue {
            let frame = message_overhead(kind, body.len()) + body.len();
            if !packet.is_empty() && packet.len() + frame > max_packet {
                self.finish(now, &mut packet, &mut tokens, emit);
                sent_any = true;
            }
            if packet.is_empty() {
                let header = self.next_header(ack);
                header_len = header.len();
                header.write(&mut packet);
            }
            debug_assert!(header_len + frame <= max_packet, "checked when queued");
            write_message(&mut packet, kind, &body);
            tokens.extend(token);
        }
        if !packet.is_empty() {
            self.finish(now, &mut packet, &mut tokens, emit);
            sent_any = true;
        }
        if sent_any {
            return;
        }
        let heartbeat_due = self
            .last_eliciting_send
            .is_none_or(|last| now.saturating_sub(last) >= heartbeat);
        if heartbeat_due {
            self.next_header(ack).write(&mut packet);
            write_ping(&mut packet);
            self.finish(now, &mut packet, &mut tokens, emit);
        } else if ack_pending {
            // Carries only acks: the peer does not ack it back, or acks would ping-pong forever.
            self.next_header(ack).write(&mut packet);
            emit(Bytes::from(packet));
        }
    }

    fn next_header(&mut self, ack: Option<AckHeader>) -> UnreliableHeader {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        UnreliableHeader { seq, ack }
    }

    fn finish(
        &mut self,
        now: Duration,
        packet: &mut Vec<u8>,
        tokens: &mut Vec<u64>,
        emit: &mut impl FnMut(Bytes),
    ) {
        let packet = std::mem::take(packet);
        let seq = u16::from_le_bytes([packet[1], packet[2]]);
        self.in_flight.push_back(InFlight {
            seq,
            sent_at: now,
            tokens: std::mem::take(tokens),
        });
        self.last_eliciting_send = Some(now);
        emit(Bytes::from(packet));
    }
}

/// Receiving side of the unreliable channel.
#[derive(Debug, Default)]
pub(crate) struct UnreliableReceiver {
    latest: Option<u16>,
    /// Bit `i` set: `latest - 1 - i` has been received.
    window: u64,
    /// A packet that asks for an ack arrived since we last sent one.
    pub(crate) ack_pending: bool,
}

/// What reading an unreliable packet produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A fresh packet: its acks for our sender, if any.
    Fresh(Option<AckHeader>),
    /// Seen before, or too old to tell: dropped without error.
    Duplicate,
}

impl UnreliableReceiver {
    pub(crate) fn ack_header(&self) -> Option<AckHeader> {
        self.latest.map(|ack| AckHeader {
            ack,
            bits: self.window as u32,
        })
    }

    /// Reads one packet, pushing its messages. A packet that cannot be parsed whole is dropped.
    pub(crate) fn handle_packet(
        &mut self,
        packet: &Bytes,
        max_packet: usize,
        messages: &mut Vec<(u16, Bytes)>,
    ) -> Result<Received, InputError> {
        if packet.len() > max_packet {
            return Err(InputError::PacketTooLarge {
                size: packet.len(),
                max: max_packet,
            });
        }
        let mut reader = Reader::new(packet);
        let header = UnreliableHeader::read(&mut reader)?;
        let start = messages.len();
        let mut eliciting = false;
        while !reader.is_empty() {
            match read_frame(&mut reader, false) {
                Ok(Frame::Message { kind, body }) => {
                    eliciting = true;
                    messages.push((kind, packet.slice_ref(body)));
                }
                Ok(Frame::Ping) => eliciting = true,
                Ok(Frame::FragmentBegin { .. } | Frame::FragmentMore { .. }) => {
                    unreachable!("read_frame refuses pieces on the unreliable channel")
                }
                Err(error) => {
                    messages.truncate(start);
                    return Err(error.into());
                }
            }
        }
        if !self.record(header.seq) {
            messages.truncate(start);
            return Ok(Received::Duplicate);
        }
        self.ack_pending |= eliciting;
        Ok(Received::Fresh(header.ack))
    }

    /// Notes `seq` as received; false if it was already, or is too old to know.
    fn record(&mut self, seq: u16) -> bool {
        let Some(latest) = self.latest else {
            self.latest = Some(seq);
            return true;
        };
        let ahead = seq.wrapping_sub(latest) as i16;
        if ahead > 0 {
            let ahead = ahead as u32;
            self.window = if ahead >= 64 {
                0
            } else {
                (self.window << ahead) | (1 << (ahead - 1))
            };
            self.latest = Some(seq);
            return true;
        }
        let behind = -(ahead as i32);
        if behind == 0 || behind > i32::from(WINDOW) {
            return false;
        }
        let bit = 1u64 << (behind - 1);
        if self.window & bit != 0 {
            return false;
        }
        self.window |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
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
        sender.flush(now, MAX, ack, pending, HEARTBEAT, &mut |p| out.push(p));
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
            receiver.handle_packet(packet, MAX, &mut messages).unwrap();
        }
        assert_eq!(messages.len(), 10);
        assert!(receiver.ack_pending);
    }

    #[test]
    fn duplicates_and_stale_packets_are_dropped() {
        let mut sender = UnreliableSender::default();
        let mut receiver = UnreliableReceiver::default();
        let mut packets = Vec::new();
        for i in 0..100u8 {
            sender.push(16, Bytes::from(vec![i]), None);
            packets.extend(flush(&mut sender, Duration::ZERO, None, false));
        }
        let mut messages = Vec::new();
        assert_eq!(
            receiver.handle_packet(&packets[99], MAX, &mut messages),
            Ok(Received::Fresh(None))
        );
        assert_eq!(
            receiver.handle_packet(&packets[99], MAX, &mut messages),
            Ok(Received::Duplicate)
        );
        assert_eq!(
            receiver.handle_packet(&packets[98], MAX, &mut messages),
            Ok(Received::Fresh(None)),
            "a reordered packet inside the window is taken"
        );
        assert_eq!(
            receiver.handle_packet(&packets[98], MAX, &mut messages),
            Ok(Received::Duplicate)
        );
        assert_eq!(
            receiver.handle_packet(&packets[0], MAX, &mut messages),
            Ok(Received::Duplicate),
            "a packet 99 behind is too old to tell from a duplicate"
        );
        assert_eq!(messages.len(), 2);
    }

    #[test]
    fn acks_deliver_tokens_and_measure_rtt() {
        let mut a = UnreliableSender::default();
        let mut b = UnreliableReceiver::default();
        a.push(16, Bytes::from_static(b"x"), Some(1));
        let packet = flush(&mut a, Duration::ZERO, None, false).remove(0);
        b.handle_packet(&packet, MAX, &mut Vec::new()).unwrap();
        a.handle_ack(40 * MS, b.ack_header().unwrap());
        assert_eq!(
            a.drain_deliveries().collect::<Vec<_>>(),
            vec![(1, Delivery::Delivered)]
        );
        assert_eq!(a.rtt.smoothed(), Some(40 * MS));
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
                b.handle_packet(&packet, MAX, &mut Vec::new()).unwrap();
            }
        }
        a.handle_ack(MS, b.ack_header().unwrap());
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
        b.handle_packet(&ping, MAX, &mut Vec::new()).unwrap();
        assert!(b.ack_pending, "a ping asks for an ack");
        let ack_only = flush(&mut a, MS, Some(AckHeader { ack: 0, bits: 0 }), true).remove(0);
        let mut c = UnreliableReceiver::default();
        c.handle_packet(&ack_only, MAX, &mut Vec::new()).unwrap();
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
                    receiver.handle_packet(&packet, MAX, &mut messages),
                    Ok(Received::Fresh(_))
                ));
            }
        }
        assert_eq!(messages.len(), 6);
        assert_eq!(receiver.ack_header().unwrap().ack, 2);
        assert_eq!(receiver.ack_header().unwrap().bits & 0b11111, 0b11111);
    }
}
