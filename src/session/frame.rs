//! The frames packets are made of.
//!
//! ```text
//! reliable packet   := frame+                       (at most reliable_packet_size)
//! unreliable packet := header frame*                (at most unreliable_packet_size)
//! header            := flags:u8 seq:u16 [ack:u16 ack_bits:u32 ack_delay:u16 if flags & HAS_ACK]
//! frame             := 0x01 kind:varint len:varint body          a whole message
//!                    | 0x02 kind:varint total:varint len:varint body   first piece of a big one
//!                    | 0x03 len:varint body                       next piece (reliable only)
//!                    | 0x04                                        ping: asks for an ack
//!                    | 0x05 time:varint                            sender's clock (unreliable only)
//! ```
//! Pieces of one message are always sent back to back on the ordered channel, so the receiver
//! needs no piece numbers: it appends until `total` bytes have arrived.
//!
//! `ack_delay` is how long the packet `ack` waited at the receiver before this packet left, in
//! units of 100 µs, rounded and saturating at 6.5535 s (as QUIC's ACK Delay): the peer acks
//! only when its app next flushes, once a frame, and subtracting the wait keeps its frame time
//! out of the round-trip time. `time` is the sender's clock (its `now`, microseconds) when the
//! packet left; with the ack and its delay it gives one NTP-style clock sample (send and receive
//! times on both sides). It rides only on a packet that carries a fresh ack, at most once per
//! [`TIME_INTERVAL`](super::unreliable::TIME_INTERVAL) and only when the packet has room, so it
//! costs about 5 bytes 20 times a second instead of on every packet. It never asks for an ack.

use std::time::Duration;

use crate::error::InputError;
use crate::wire::{Reader, WireError, put_varint, varint_len};

pub(crate) const TAG_MESSAGE: u8 = 0x01;
pub(crate) const TAG_FRAGMENT_BEGIN: u8 = 0x02;
pub(crate) const TAG_FRAGMENT_MORE: u8 = 0x03;
pub(crate) const TAG_PING: u8 = 0x04;
pub(crate) const TAG_TIME: u8 = 0x05;

/// Largest `time` a time frame may carry: 2^49 µs (17 years) fits seven varint bytes, which
/// bounds the frame at eight.
pub(crate) const MAX_TIME_MICROS: u64 = (1 << 49) - 1;

/// The unit of `ack_delay`: fine enough for sub-millisecond round trips, coarse enough that two
/// bytes hold the longest frame hitch worth measuring.
const ACK_DELAY_UNIT_MICROS: u128 = 100;

/// Largest message kind: kinds fit two varint bytes.
pub(crate) const MAX_KIND: u16 = (1 << 14) - 1;

/// Header flag: the header carries acknowledgements.
pub(crate) const FLAG_HAS_ACK: u8 = 0x01;

/// One frame, borrowing its body from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    Message {
        kind: u16,
        body: &'a [u8],
    },
    FragmentBegin {
        kind: u16,
        total: u64,
        body: &'a [u8],
    },
    FragmentMore {
        body: &'a [u8],
    },
    Ping,
    /// The sender's clock when the packet left.
    Time(Duration),
}

/// The acknowledgement part of an unreliable packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckHeader {
    /// The newest sequence number received.
    pub(crate) ack: u16,
    /// Bit `i` set: `ack - 1 - i` was received too.
    pub(crate) bits: u32,
    /// How long `ack` waited at the receiver before this ack left, in units of 100 µs.
    pub(crate) delay: u16,
}

impl AckHeader {
    /// Encodes a wait, rounded to the unit and saturating, so a long hitch reads as the longest
    /// wait rather than wrapping to a short one.
    pub(crate) fn encode_delay(delay: Duration) -> u16 {
        let units = (delay.as_micros() + ACK_DELAY_UNIT_MICROS / 2) / ACK_DELAY_UNIT_MICROS;
        u16::try_from(units).unwrap_or(u16::MAX)
    }

    /// The wait this ack reports.
    pub(crate) fn delay(&self) -> Duration {
        Duration::from_micros(u64::from(self.delay) * ACK_DELAY_UNIT_MICROS as u64)
    }
}

/// The header of an unreliable packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnreliableHeader {
    pub(crate) seq: u16,
    pub(crate) ack: Option<AckHeader>,
}

impl UnreliableHeader {
    pub(crate) fn len(&self) -> usize {
        if self.ack.is_some() { 11 } else { 3 }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.push(if self.ack.is_some() { FLAG_HAS_ACK } else { 0 });
        out.extend_from_slice(&self.seq.to_le_bytes());
        if let Some(ack) = self.ack {
            out.extend_from_slice(&ack.ack.to_le_bytes());
            out.extend_from_slice(&ack.bits.to_le_bytes());
            out.extend_from_slice(&ack.delay.to_le_bytes());
        }
    }

    pub(crate) fn read(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        let flags = reader.u8()?;
        if flags & !FLAG_HAS_ACK != 0 {
            return Err(WireError::OutOfRange("header flags"));
        }
        let seq = reader.u16()?;
        let ack = if flags & FLAG_HAS_ACK != 0 {
            Some(AckHeader {
                ack: reader.u16()?,
                bits: reader.u32()?,
                delay: reader.u16()?,
            })
        } else {
            None
        };
        Ok(Self { seq, ack })
    }
}

/// Bytes a whole-message frame takes around a body of `len` bytes.
pub(crate) fn message_overhead(kind: u16, len: usize) -> usize {
    1 + varint_len(kind.into()) + varint_len(len as u64)
}

pub(crate) fn write_message(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.push(TAG_MESSAGE);
    put_varint(out, kind.into());
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

pub(crate) fn write_fragment_begin(out: &mut Vec<u8>, kind: u16, total: usize, piece: &[u8]) {
    out.push(TAG_FRAGMENT_BEGIN);
    put_varint(out, kind.into());
    put_varint(out, total as u64);
    put_varint(out, piece.len() as u64);
    out.extend_from_slice(piece);
}

pub(crate) fn write_fragment_more(out: &mut Vec<u8>, piece: &[u8]) {
    out.push(TAG_FRAGMENT_MORE);
    put_varint(out, piece.len() as u64);
    out.extend_from_slice(piece);
}

pub(crate) fn write_ping(out: &mut Vec<u8>) {
    out.push(TAG_PING);
}

/// Bytes a time frame takes.
pub(crate) fn time_frame_len(time: Duration) -> usize {
    1 + varint_len(time_micros(time))
}

pub(crate) fn write_time(out: &mut Vec<u8>, time: Duration) {
    out.push(TAG_TIME);
    put_varint(out, time_micros(time));
}

fn time_micros(time: Duration) -> u64 {
    u64::try_from(time.as_micros()).map_or(MAX_TIME_MICROS, |us| us.min(MAX_TIME_MICROS))
}

/// Reads the next frame. `reliable` says which channel the packet came from: pieces of big
/// messages are only valid on the ordered one.
pub(crate) fn read_frame<'a>(
    reader: &mut Reader<'a>,
    reliable: bool,
) -> Result<Frame<'a>, FrameError> {
    let tag = reader.u8()?;
    match tag {
        TAG_MESSAGE => {
            let kind = read_kind(reader)?;
            let len = reader.varint()?;
            let body = reader.bytes(usize::try_from(len).map_err(|_| WireError::Truncated)?)?;
            Ok(Frame::Message { kind, body })
        }
        TAG_FRAGMENT_BEGIN if reliable => {
            let kind = read_kind(reader)?;
            let total = reader.varint()?;
            let len = reader.varint()?;
            let body = reader.bytes(usize::try_from(len).map_err(|_| WireError::Truncated)?)?;
            if (body.len() as u64) >= total {
                return Err(FrameError::Wire(WireError::OutOfRange("first piece")));
            }
            Ok(Frame::FragmentBegin { kind, total, body })
        }
        TAG_FRAGMENT_MORE if reliable => {
            let len = reader.varint()?;
            let body = reader.bytes(usize::try_from(len).map_err(|_| WireError::Truncated)?)?;
            if body.is_empty() {
                return Err(FrameError::Wire(WireError::OutOfRange("empty piece")));
            }
            Ok(Frame::FragmentMore { body })
        }
        TAG_PING if !reliable => Ok(Frame::Ping),
        TAG_TIME if !reliable => {
            let micros = reader.varint_max(MAX_TIME_MICROS, "time")?;
            Ok(Frame::Time(Duration::from_micros(micros)))
        }
        other => Err(FrameError::UnknownFrame(other)),
    }
}

fn read_kind(reader: &mut Reader<'_>) -> Result<u16, WireError> {
    // The range check makes the narrowing exact.
    Ok(reader.varint_max(MAX_KIND.into(), "message kind")? as u16)
}

/// A frame that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    Wire(WireError),
    UnknownFrame(u8),
}

impl From<WireError> for FrameError {
    fn from(error: WireError) -> Self {
        FrameError::Wire(error)
    }
}

impl From<FrameError> for InputError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::Wire(error) => InputError::Malformed(error),
            FrameError::UnknownFrame(tag) => InputError::UnknownFrame(tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_with_and_without_acks() {
        for header in [
            UnreliableHeader { seq: 7, ack: None },
            UnreliableHeader {
                seq: u16::MAX,
                ack: Some(AckHeader {
                    ack: 3,
                    bits: 0xdead_beef,
                    delay: 330,
                }),
            },
        ] {
            let mut out = Vec::new();
            header.write(&mut out);
            assert_eq!(out.len(), header.len());
            assert_eq!(UnreliableHeader::read(&mut Reader::new(&out)), Ok(header));
        }
    }

    #[test]
    fn ack_delays_round_to_the_unit_and_saturate() {
        assert_eq!(AckHeader::encode_delay(Duration::from_micros(33_349)), 333);
        assert_eq!(AckHeader::encode_delay(Duration::from_micros(33_350)), 334);
        assert_eq!(
            AckHeader::encode_delay(Duration::from_secs(60)),
            u16::MAX,
            "a minute-long hitch reads as the longest wait, not a wrapped short one"
        );
    }

    #[test]
    fn time_frames_round_trip_and_refuse_the_reliable_channel() {
        for time in [Duration::ZERO, Duration::from_micros(1_234_567)] {
            let mut out = Vec::new();
            write_time(&mut out, time);
            assert_eq!(out.len(), time_frame_len(time));
            assert_eq!(
                read_frame(&mut Reader::new(&out), false),
                Ok(Frame::Time(time))
            );
            assert_eq!(
                read_frame(&mut Reader::new(&out), true),
                Err(FrameError::UnknownFrame(TAG_TIME))
            );
        }
        let mut huge = vec![TAG_TIME];
        put_varint(&mut huge, MAX_TIME_MICROS + 1);
        assert!(
            read_frame(&mut Reader::new(&huge), false).is_err(),
            "a time beyond seven varint bytes is refused"
        );
    }

    #[test]
    fn pieces_are_refused_on_the_unreliable_channel() {
        let mut out = Vec::new();
        write_fragment_more(&mut out, b"abc");
        assert_eq!(
            read_frame(&mut Reader::new(&out), false),
            Err(FrameError::UnknownFrame(TAG_FRAGMENT_MORE))
        );
        assert_eq!(
            read_frame(&mut Reader::new(&out), true),
            Ok(Frame::FragmentMore { body: b"abc" })
        );
    }

    #[test]
    fn a_first_piece_as_long_as_its_message_is_refused() {
        let mut out = Vec::new();
        write_fragment_begin(&mut out, 3, 3, b"abc");
        assert!(read_frame(&mut Reader::new(&out), true).is_err());
    }

    #[test]
    fn overhead_matches_what_is_written() {
        for len in [0usize, 1, 127, 128, 20_000] {
            let body = vec![7u8; len];
            let mut out = Vec::new();
            write_message(&mut out, 300, &body);
            assert_eq!(out.len(), len + message_overhead(300, len));
        }
    }
}
