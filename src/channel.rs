//! The data channels every peer opens, in this order.

use serde::{Deserialize, Serialize};

/// A WebRTC data channel of the peer connection.
///
/// The set is fixed and part of the protocol: data channels are negotiated by index, so every
/// peer must declare the same list in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    /// Ordered and retransmitted until delivered: chat, commands, spawns. A lost packet delays
    /// everything behind it until it is resent.
    Reliable,
    /// Unordered, never retransmitted: state that is sent again anyway (positions, inputs).
    /// Messages must fit one packet (see
    /// [`SessionConfig::max_unreliable_message`](crate::SessionConfig::max_unreliable_message)).
    Unreliable,
}

impl Channel {
    /// Every channel, in the order the data channels are declared.
    pub const ALL: [Channel; 2] = [Channel::Reliable, Channel::Unreliable];

    /// The data channel's index.
    pub fn index(self) -> usize {
        self as usize
    }
}
