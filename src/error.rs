//! The errors every layer reports. Each is built by the layer that detects the problem: the
//! session (packets), the endpoint (handshake, kinds), messages and replication (bodies, rights).

use std::fmt;

use crate::channel::Channel;
use crate::peer::PeerId;
use crate::wire::WireError;

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The encoded message is bigger than its channel allows.
    TooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The channel's limit.
        max: usize,
        /// The channel it was sent on.
        channel: Channel,
    },
    /// No connected peer has this id.
    UnknownPeer(PeerId),
    /// The message could not be encoded.
    Encode(String),
    /// Sent to the host while this peer is not in a room (no host to send to).
    NotInRoom,
    /// Only messages on the reliable channel can be tracked (a lost unreliable one would never
    /// be answered).
    NotReliable,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TooLarge { size, max, channel } => write!(
                f,
                "message of {size} bytes is over the {max}-byte limit of the {channel:?} channel"
            ),
            SendError::UnknownPeer(peer) => write!(f, "no connected peer {peer}"),
            SendError::Encode(error) => write!(f, "could not encode message: {error}"),
            SendError::NotInRoom => f.write_str("not in a room, so there is no host"),
            SendError::NotReliable => {
                f.write_str("only messages on the reliable channel can be tracked")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Why input from a peer was dropped. Reported to the game with the peer it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputError {
    /// The packet's bytes do not follow the wire format.
    Malformed(WireError),
    /// The packet holds a frame type this version does not know.
    UnknownFrame(u8),
    /// A packet with nothing in it.
    EmptyPacket,
    /// A packet bigger than its channel allows.
    PacketTooLarge {
        /// Its size.
        size: usize,
        /// The channel's limit.
        max: usize,
    },
    /// A message bigger than the configured maximum.
    MessageTooLarge {
        /// The size it announced.
        size: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The pieces of a big message came out of sequence.
    BrokenPieces,
    /// A message of a kind nobody registered.
    UnknownKind(u16),
    /// A message whose body failed to decode as its registered type.
    Decode {
        /// The registered type.
        type_name: &'static str,
        /// What the decoder said.
        error: String,
    },
    /// The peer broke the connection handshake.
    Handshake(String),
    /// A message that is only valid from another peer (e.g. a write to something it does not
    /// own).
    Unauthorized(String),
    /// The peer went over a limit this peer sets on what one peer may make it hold (see
    /// `ReplicationConfig::max_entities_per_peer`); what was over it is dropped.
    OverLimit(String),
}

impl From<WireError> for InputError {
    fn from(error: WireError) -> Self {
        InputError::Malformed(error)
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Malformed(error) => write!(f, "malformed packet: {error}"),
            InputError::UnknownFrame(tag) => write!(f, "unknown frame type {tag:#04x}"),
            InputError::EmptyPacket => f.write_str("empty packet"),
            InputError::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes over the {max}-byte limit")
            }
            InputError::MessageTooLarge { size, max } => {
                write!(f, "message of {size} bytes over the {max}-byte limit")
            }
            InputError::BrokenPieces => f.write_str("pieces of a big message out of sequence"),
            InputError::UnknownKind(kind) => write!(f, "unknown message kind {kind}"),
            InputError::Decode { type_name, error } => {
                write!(f, "could not decode {type_name}: {error}")
            }
            InputError::Handshake(reason) => write!(f, "handshake: {reason}"),
            InputError::Unauthorized(reason) => write!(f, "unauthorized: {reason}"),
            InputError::OverLimit(reason) => write!(f, "over a limit: {reason}"),
        }
    }
}

impl std::error::Error for InputError {}
