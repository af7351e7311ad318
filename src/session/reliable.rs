//! The ordered reliable channel: batching small messages, splitting big ones, reassembling.

use std::collections::VecDeque;

use bytes::Bytes;

use super::frame::{
    Frame, message_overhead, read_frame, write_fragment_begin, write_fragment_more, write_message,
};
use crate::error::InputError;
use crate::wire::{Reader, varint_len};

/// A piece shorter than this is not worth starting at the end of a packet.
const MIN_PIECE: usize = 64;

/// Messages waiting for the next flush, in the order they were queued.
#[derive(Debug, Default)]
pub(crate) struct ReliableSender {
    queue: VecDeque<(u16, Bytes)>,
}

impl ReliableSender {
    pub(crate) fn push(&mut self, kind: u16, body: Bytes) {
        self.queue.push_back((kind, body));
    }

    /// Packs every queued message into packets of at most `max_packet` bytes, in order. Small
    /// messages share packets; a message too big for one is split into pieces sent back to back.
    pub(crate) fn flush(&mut self, max_packet: usize, emit: &mut impl FnMut(Bytes)) {
        let mut packet = Vec::new();
        // The varint that holds a piece's length never needs more bytes than this.
        let len_bytes = varint_len(max_packet as u64);
        while let Some((kind, body)) = self.queue.pop_front() {
            let whole = message_overhead(kind, body.len()) + body.len();
            if packet.len() + whole <= max_packet {
                write_message(&mut packet, kind, &body);
                continue;
            }
            if whole <= max_packet {
                finish(&mut packet, emit);
                write_message(&mut packet, kind, &body);
                continue;
            }
            let total = body.len();
            let begin_header = 1 + varint_len(kind.into()) + varint_len(total as u64) + len_bytes;
            if packet.len() + begin_header + MIN_PIECE > max_packet {
                finish(&mut packet, emit);
            }
            let room = max_packet - packet.len() - begin_header;
            // `whole > max_packet` makes `room < total`: the first piece is never the whole.
            let mut offset = room.min(total - 1);
            write_fragment_begin(&mut packet, kind, total, &body[..offset]);
            while offset < total {
                finish(&mut packet, emit);
                let piece = (max_packet - 1 - len_bytes).min(total - offset);
                write_fragment_more(&mut packet, &body[offset..offset + piece]);
                offset += piece;
            }
        }
        finish(&mut packet, emit);
    }
}

fn finish(packet: &mut Vec<u8>, emit: &mut impl FnMut(Bytes)) {
    if !packet.is_empty() {
        emit(Bytes::from(std::mem::take(packet)));
    }
}

#[derive(Debug, Default)]
enum Reassembly {
    #[default]
    Idle,
    Collecting {
        kind: u16,
        total: usize,
        buf: Vec<u8>,
    },
    /// Swallowing the pieces of a message that was refused at its first piece.
    Skipping { remaining: u64 },
}

/// Turns packets of the ordered reliable channel back into messages.
#[derive(Debug, Default)]
pub(crate) struct ReliableReceiver {
    state: Reassembly,
}

impl ReliableReceiver {
    /// Reads one packet. A packet that cannot be parsed is dropped whole; a frame that breaks
    /// the piece sequence is dropped alone. Every problem is pushed to `errors`.
    pub(crate) fn handle_packet(
        &mut self,
        packet: &Bytes,
        max_message: usize,
        messages: &mut Vec<(u16, Bytes)>,
        errors: &mut Vec<InputError>,
    ) {
        let mut frames = Vec::new();
        let mut reader = Reader::new(packet);
        while !reader.is_empty() {
            match read_frame(&mut reader, true) {
                Ok(frame) => frames.push(frame),
                Err(error) => {
                    errors.push(error.into());
                    return;
                }
            }
        }
        if frames.is_empty() {
            errors.push(InputError::EmptyPacket);
        }
        for frame in frames {
            self.handle_frame(packet, frame, max_message, messages, errors);
        }
    }

    fn handle_frame(
        &mut self,
        packet: &Bytes,
        frame: Frame<'_>,
        max_message: usize,
        messages: &mut Vec<(u16, Bytes)>,
        errors: &mut Vec<InputError>,
    ) {
        match frame {
            Frame::Message { kind, body } => {
                if !matches!(self.state, Reassembly::Idle) {
                    self.state = Reassembly::Idle;
                    errors.push(InputError::BrokenPieces);
                }
                if body.len() > max_message {
                    errors.push(InputError::MessageTooLarge {
                        size: body.len() as u64,
                        max: max_message,
                    });
                    return;
                }
                messages.push((kind, packet.slice_ref(body)));
            }
            Frame::FragmentBegin { kind, total, body } => {
                if !matches!(self.state, Reassembly::Idle) {
                    errors.push(InputError::BrokenPieces);
                }
                if total > max_message as u64 {
                    errors.push(InputError::MessageTooLarge {
                        size: total,
                        max: max_message,
                    });
                    self.state = Reassembly::Skipping {
                        remaining: total - body.len() as u64,
                    };
                    return;
                }
                let total = total as usize;
                // Grow with what arrives rather than trusting `total` up front.
                let mut buf = Vec::with_capacity(total.min(64 * 1024));
                buf.extend_from_slice(body);
                self.state = Reassembly::Collecting { kind, total, buf };
            }
            Frame::FragmentMore { body } => match &mut self.state {
                Reassembly::Idle => errors.push(InputError::BrokenPieces),
                Reassembly::Skipping { remaining } => {
                    match remaining.checked_sub(body.len() as u64) {
                        Some(0) => self.state = Reassembly::Idle,
                        Some(left) => *remaining = left,
                        None => {
                            self.state = Reassembly::Idle;
                            errors.push(InputError::BrokenPieces);
                        }
                    }
                }
                Reassembly::Collecting { kind, total, buf } => {
                    if buf.len() + body.len() > *total {
                        self.state = Reassembly::Idle;
                        errors.push(InputError::BrokenPieces);
                        return;
                    }
                    buf.extend_from_slice(body);
                    if buf.len() == *total {
                        let kind = *kind;
                        let buf = std::mem::take(buf);
                        self.state = Reassembly::Idle;
                        messages.push((kind, Bytes::from(buf)));
                    }
                }
            },
            Frame::Ping | Frame::Time(_) => {
                unreachable!("read_frame refuses pings and time frames on the reliable channel")
            }
        }
    }

    /// Bytes held for a message still arriving.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        match &self.state {
            Reassembly::Collecting { buf, .. } => buf.capacity(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PACKET: usize = 16 * 1024;
    const MAX: usize = 1 << 20;

    fn send(messages: &[(u16, Vec<u8>)], max_packet: usize) -> Vec<Bytes> {
        let mut sender = ReliableSender::default();
        for (kind, body) in messages {
            sender.push(*kind, Bytes::from(body.clone()));
        }
        let mut packets = Vec::new();
        sender.flush(max_packet, &mut |packet| packets.push(packet));
        packets
    }

    fn receive(packets: &[Bytes]) -> (Vec<(u16, Vec<u8>)>, Vec<InputError>) {
        let mut receiver = ReliableReceiver::default();
        let mut messages = Vec::new();
        let mut errors = Vec::new();
        for packet in packets {
            receiver.handle_packet(packet, MAX, &mut messages, &mut errors);
        }
        let messages = messages.into_iter().map(|(k, b)| (k, b.to_vec())).collect();
        (messages, errors)
    }

    #[test]
    fn small_messages_share_a_packet() {
        let messages: Vec<_> = (0..10).map(|i| (16u16, vec![i as u8; 100])).collect();
        let packets = send(&messages, PACKET);
        assert_eq!(
            packets.len(),
            1,
            "ten 100-byte messages fit one 16 KiB packet"
        );
        assert_eq!(receive(&packets), (messages, vec![]));
    }

    #[test]
    fn a_200_kib_message_is_split_into_16_kib_packets_and_rebuilt() {
        let body: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        let messages = vec![(20, vec![1, 2, 3]), (21, body), (22, vec![4])];
        let packets = send(&messages, PACKET);
        assert!(packets.iter().all(|p| p.len() <= PACKET && !p.is_empty()));
        assert_eq!(packets.len(), 13);
        assert_eq!(receive(&packets), (messages, vec![]));
    }

    #[test]
    fn empty_messages_still_make_non_empty_packets() {
        let packets = send(&[(16, vec![])], PACKET);
        assert_eq!(packets.len(), 1);
        assert!(!packets[0].is_empty());
        assert_eq!(receive(&packets).0, vec![(16, vec![])]);
    }

    #[test]
    fn a_message_over_the_cap_is_refused_and_its_pieces_skipped() {
        let big = vec![9u8; 3 * PACKET];
        let packets = send(&[(16, big), (17, vec![1])], PACKET);
        let mut receiver = ReliableReceiver::default();
        let mut messages = Vec::new();
        let mut errors = Vec::new();
        for packet in &packets {
            receiver.handle_packet(packet, 2 * PACKET, &mut messages, &mut errors);
        }
        assert_eq!(messages, vec![(17, Bytes::from_static(&[1]))]);
        assert_eq!(
            errors,
            vec![InputError::MessageTooLarge {
                size: 3 * PACKET as u64,
                max: 2 * PACKET
            }]
        );
        assert_eq!(receiver.buffered(), 0);
    }

    #[test]
    fn a_piece_without_a_start_is_reported() {
        let mut packet = Vec::new();
        write_fragment_more(&mut packet, b"stray");
        write_message(&mut packet, 16, b"ok");
        let (messages, errors) = receive(&[Bytes::from(packet)]);
        assert_eq!(messages, vec![(16, b"ok".to_vec())]);
        assert_eq!(errors, vec![InputError::BrokenPieces]);
    }

    proptest! {
        #[test]
        fn every_sequence_of_messages_round_trips(
            messages in proptest::collection::vec(
                (16u16..2000, proptest::collection::vec(any::<u8>(), 0..40_000)), 0..8),
            max_packet in 200usize..20_000,
        ) {
            let packets = send(&messages, max_packet);
            prop_assert!(packets.iter().all(|p| p.len() <= max_packet && !p.is_empty()));
            prop_assert_eq!(receive(&packets), (messages, vec![]));
        }

        #[test]
        fn any_bytes_decode_to_messages_or_errors(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..6)
        ) {
            let mut receiver = ReliableReceiver::default();
            let mut messages = Vec::new();
            let mut errors = Vec::new();
            for packet in packets {
                receiver.handle_packet(&Bytes::from(packet), 4096, &mut messages, &mut errors);
            }
            prop_assert!(receiver.buffered() <= 64 * 1024);
            prop_assert!(messages.iter().all(|(_, body)| body.len() <= 4096));
        }
    }
}
