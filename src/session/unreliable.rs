//! The unreliable channel: sequence numbers, acknowledgements, loss detection, de-duplication.
//!
//! Every unreliable packet carries a sequence number and acknowledges the newest packets
//! received from the other side (the newest one plus a 32-bit window before it). The sender
//! learns which of its packets arrived, which gives the round-trip time, the loss rate, and
//! lets the layers above attach a token to a message and hear whether it was delivered or lost,
//! which is how replication resends lost state without the reliable channel's head-of-line
//! blocking.
//!
//! Each ack says how long the newest packet it acknowledges waited before the ack left (the
//! peer acks once per frame), and the round trip is measured without that wait. Now and then a
//! packet with an ack also carries the sender's clock, which gives the peer a clock sample.
//!
//! A frame may bring more packets than one ack covers (33): a big world's changes fill a hundred.
//! The receiver then sends, before its usual ack, ack-only packets for the older ones that
//! arrived (oldest first, up to 128 back), marked with the longest ack delay: they give no
//! round-trip or clock sample, since the receiver does not know how long each waited. Without
//! them the sender would call every packet more than 32 behind the newest lost.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::frame::{
    AckHeader, Frame, UnreliableHeader, message_overhead, read_frame, time_frame_len,
    write_message, write_ping, write_time,
};
use crate::error::InputError;
use crate::wire::Reader;

/// How many packets back the duplicate filter remembers, and acks can reach.
const WINDOW: u16 = 128;
/// How many packets may wait for an ack before the oldest is given up as lost.
const MAX_IN_FLIGHT: usize = 1024;
/// Shortest time between two packets that carry our clock. Twenty clock samples a second keep
/// the offset filter's window full of recent samples for about 5 bytes each, where a timestamp
/// on every packet would cost those bytes 60 times a second or more in a busy game.
pub(crate) const TIME_INTERVAL: Duration = Duration::from_millis(50);
/// Lowest round-trip sample taken, whatever the peer says it held the packet: a peer that
/// overstates its ack delay cannot push the figure to zero or below.
const MIN_RTT_SAMPLE: Duration = Duration::from_micros(100);

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
    /// Which flush sent it: packets of one flush are acked in ranges, possibly by several acks.
    flush: u64,
    tokens: Vec<u64>,
}

/// A round-trip estimator in the manner of RFC 6298.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The longest recent ack delay the peer reported, decaying by 1/16 per ack.
    ack_delay: Duration,
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

    /// Notes how long the peer held a packet before acking it.
    fn note_ack_delay(&mut self, delay: Duration) {
        self.ack_delay = delay.max(self.ack_delay - self.ack_delay / 16);
    }

    pub(crate) fn smoothed(&self) -> Option<Duration> {
        self.srtt
    }

    /// How long the peer recently held packets before acking them (it acks once per frame):
    /// an ack takes about `rtt + ack_delay` to come back.
    pub(crate) fn ack_delay(&self) -> Duration {
        self.ack_delay
    }

    /// How long to wait for an ack before calling a packet lost: the round trip, the longest
    /// recent wait for the peer's next frame (it acks then, not at once), and a margin.
    pub(crate) fn loss_timeout(&self) -> Duration {
        match self.srtt {
            None => Duration::from_millis(300),
            Some(srtt) => {
                srtt + self.ack_delay
                    + (self.rttvar * 4).max(Duration::from_millis(10))
                    + Duration::from_millis(20)
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
    /// When our clock last went out in a time frame.
    last_time_sent: Option<Duration>,
    /// This flush should put our clock on a packet (one with an ack, that has room).
    time_due: bool,
    /// Flushes so far.
    flushes: u64,
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

    /// Takes in the acknowledgements of a packet from the other side. When they newly
    /// acknowledge the newest packet they name, returns when that packet was sent, for a clock
    /// sample.
    pub(crate) fn handle_ack(&mut self, now: Duration, ack: AckHeader) -> Option<Duration> {
        let mut newest_sent_at = None;
        // A packet out of this ack's window is lost only if it went out before the packet this
        // ack names: the packets of one busy flush are acked in ranges, by several acks, and the
        // one for a packet's range may be the one lost (then the timeout decides).
        let named_flush = self
            .in_flight
            .iter()
            .find(|packet| packet.seq == ack.ack)
            .map_or(u64::MAX, |packet| packet.flush);
        let mut index = 0;
        while index < self.in_flight.len() {
            let seq = self.in_flight[index].seq;
            let behind = ack.ack.wrapping_sub(seq) as i16;
            let acked =
                behind == 0 || (1..=32).contains(&behind) && ack.bits & (1 << (behind - 1)) != 0;
            if acked {
                let packet = self.in_flight.remove(index).expect("index is in range");
                // An older range's ack (see the module's docs) does not know the wait.
                if behind == 0 && newest_sent_at.is_none() && ack.delay != u16::MAX {
                    newest_sent_at = Some(packet.sent_at);
                    // The peer held it until its next flush: that wait is its frame time, not
                    // the network's, so it comes off (never below the floor: a peer that
                    // overstates it only makes its own figure look better, never negative).
                    let raw = now.saturating_sub(packet.sent_at);
                    let held = ack.delay().min(raw);
                    self.rtt.note_ack_delay(held);
                    self.rtt.sample((raw - held).max(MIN_RTT_SAMPLE));
                }
                self.resolve(packet, Delivery::Delivered);
                continue;
            }
            if behind > 32 && self.in_flight[index].flush < named_flush {
                // Out of the ack window without having been acked: it is not coming.
                let packet = self.in_flight.remove(index).expect("index is in range");
                self.resolve(packet, Delivery::Lost);
                continue;
            }
            index += 1;
        }
        newest_sent_at
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
    /// for an ack went out for `heartbeat`, so round-trip and loss figures stay fresh. The
    /// first packet with room carries our clock when a fresh ack goes out (`ack_pending`) and
    /// none did for [`TIME_INTERVAL`].
    pub(crate) fn flush(
        &mut self,
        now: Duration,
        max_packet: usize,
        acks: Acks,
        heartbeat: Duration,
        emit: &mut impl FnMut(Bytes),
    ) {
        self.flushes += 1;
        let Acks {
            ack,
            older,
            pending: ack_pending,
        } = acks;
        // Older ranges first: the usual ack, newer, would call their packets lost.
        for header in older.iter().rev() {
            let mut packet = Vec::new();
            self.next_header(Some(*header)).write(&mut packet);
            emit(Bytes::from(packet));
        }
        let mut packet = Vec::new();
        let mut tokens = Vec::new();
        let mut header_len = 0;
        let queue = std::mem::take(&mut self.queue);
        let mut sent_any = false;
        self.time_due = ack.is_some()
            && ack_pending
            && self
                .last_time_sent
                .is_none_or(|last| now.saturating_sub(last) >= TIME_INTERVAL);
        for (kind, body, token) in queue {
            let frame = message_overhead(kind, body.len()) + body.len();
            if !packet.is_empty() && packet.len() + frame > max_packet {
                self.finish(now, max_packet, &mut packet, &mut tokens, emit);
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
            self.finish(now, max_packet, &mut packet, &mut tokens, emit);
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
            self.finish(now, max_packet, &mut packet, &mut tokens, emit);
        } else if ack_pending {
            // Carries only acks: the peer does not ack it back, or acks would ping-pong forever.
            self.next_header(ack).write(&mut packet);
            self.stamp(now, max_packet, &mut packet);
            emit(Bytes::from(packet));
        }
    }

    /// Adds our clock to the packet if it is due and fits.
    fn stamp(&mut self, now: Duration, max_packet: usize, packet: &mut Vec<u8>) {
        if self.time_due && packet.len() + time_frame_len(now) <= max_packet {
            write_time(packet, now);
            self.time_due = false;
            self.last_time_sent = Some(now);
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
        max_packet: usize,
        packet: &mut Vec<u8>,
        tokens: &mut Vec<u64>,
        emit: &mut impl FnMut(Bytes),
    ) {
        self.stamp(now, max_packet, packet);
        let packet = std::mem::take(packet);
        let seq = u16::from_le_bytes([packet[1], packet[2]]);
        self.in_flight.push_back(InFlight {
            seq,
            sent_at: now,
            flush: self.flushes,
            tokens: std::mem::take(tokens),
        });
        self.last_eliciting_send = Some(now);
        emit(Bytes::from(packet));
    }
}

/// The acks one flush sends.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    /// The usual one, on every packet: the newest packet received and the 32 before it.
    pub(crate) ack: Option<AckHeader>,
    /// Ranges further back with packets that arrived since the last flush, newest first.
    pub(crate) older: Vec<AckHeader>,
    /// A packet that asks for an ack arrived since the last flush.
    pub(crate) pending: bool,
}

/// Receiving side of the unreliable channel.
#[derive(Debug, Default)]
pub(crate) struct UnreliableReceiver {
    latest: Option<u16>,
    /// When `latest` arrived: the ack delay counts from here.
    latest_at: Duration,
    /// Bit `i` set: `latest - 1 - i` has been received.
    window: u128,
    /// Bit `i` set: `latest - 1 - i` asked for an ack and arrived since the last flush.
    fresh: u128,
    /// `latest` asked for an ack and arrived since the last flush.
    latest_fresh: bool,
    /// A packet that asks for an ack arrived since we last sent one.
    pub(crate) ack_pending: bool,
}

/// What a fresh packet brought besides its messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Arrival {
    /// Its acks for our sender.
    pub(crate) ack: Option<AckHeader>,
    /// The peer's clock when it left.
    pub(crate) time: Option<Duration>,
}

/// What reading an unreliable packet produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A fresh packet: its acks and clock, if any.
    Fresh(Arrival),
    /// Seen before, or too old to tell: dropped without error.
    Duplicate,
}

impl UnreliableReceiver {
    /// The acks to send at `now`, with how long the newest one has waited; the next ones
    /// start afresh.
    pub(crate) fn take_acks(&mut self, now: Duration) -> Acks {
        let ack = self.latest.map(|ack| AckHeader {
            ack,
            bits: self.window as u32,
            delay: AckHeader::encode_delay(now.saturating_sub(self.latest_at)),
        });
        let mut older = Vec::new();
        if let Some(latest) = self.latest {
            // Offsets 0..32 are in the usual ack.
            let mut offset = 32;
            while offset < u32::from(WINDOW) {
                if self.fresh & (1 << offset) == 0 {
                    offset += 1;
                    continue;
                }
                // Offset 127's range reaches past the window: nothing is known there.
                let bits = self.window.checked_shr(offset + 1).unwrap_or(0) as u32;
                older.push(AckHeader {
                    ack: latest.wrapping_sub(1 + offset as u16),
                    bits,
                    delay: u16::MAX,
                });
                offset += 33;
            }
        }
        let pending = std::mem::take(&mut self.ack_pending);
        self.fresh = 0;
        self.latest_fresh = false;
        Acks {
            ack,
            older,
            pending,
        }
    }

    /// Reads one packet that arrived at `now`, pushing its messages. A packet that cannot be
    /// parsed whole is dropped.
    pub(crate) fn handle_packet(
        &mut self,
        now: Duration,
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
        let mut time = None;
        while !reader.is_empty() {
            match read_frame(&mut reader, false) {
                Ok(Frame::Message { kind, body }) => {
                    eliciting = true;
                    messages.push((kind, packet.slice_ref(body)));
                }
                Ok(Frame::Ping) => eliciting = true,
                Ok(Frame::Time(sent)) => time = Some(sent),
                Ok(Frame::FragmentBegin { .. } | Frame::FragmentMore { .. }) => {
                    unreachable!("read_frame refuses pieces on the unreliable channel")
                }
                Err(error) => {
                    messages.truncate(start);
                    return Err(error.into());
                }
            }
        }
        let latest = self.latest;
        if !self.record(header.seq, eliciting) {
            messages.truncate(start);
            return Ok(Received::Duplicate);
        }
        if self.latest != latest {
            self.latest_at = now;
        }
        self.ack_pending |= eliciting;
        Ok(Received::Fresh(Arrival {
            ack: header.ack,
            time,
        }))
    }

    /// Notes `seq` as received (`eliciting`: it asks for an ack); false if it was already, or
    /// is too old to know.
    fn record(&mut self, seq: u16, eliciting: bool) -> bool {
        let Some(latest) = self.latest else {
            self.latest = Some(seq);
            self.latest_fresh = eliciting;
            return true;
        };
        let ahead = seq.wrapping_sub(latest) as i16;
        if ahead > 0 {
            let ahead = ahead as u32;
            // The old newest moves into the windows.
            let was_fresh = u128::from(std::mem::replace(&mut self.latest_fresh, eliciting));
            (self.window, self.fresh) = if ahead >= u32::from(WINDOW) {
                (0, 0)
            } else {
                (
                    (self.window << ahead) | (1 << (ahead - 1)),
                    (self.fresh << ahead) | (was_fresh << (ahead - 1)),
                )
            };
            self.latest = Some(seq);
            return true;
        }
        let behind = -(ahead as i32);
        if behind == 0 || behind > i32::from(WINDOW) {
            return false;
        }
        let bit = 1u128 << (behind - 1);
        if self.window & bit != 0 {
            return false;
        }
        self.window |= bit;
        if eliciting {
            self.fresh |= bit;
        }
        true
    }
}

#[cfg(test)]
mod tests;
