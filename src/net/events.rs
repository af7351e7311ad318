//! The lifecycle moments of peers and of the socket, as observer events.

use bevy::prelude::*;

use crate::error::InputError;
use crate::peer::PeerId;
use crate::transport::SocketState;

/// A peer connected and passed the protocol check; its [`Peer`](crate::Peer) entity exists.
#[derive(Event, Debug, Clone, Copy)]
pub struct PeerConnected {
    /// The peer.
    pub peer: PeerId,
    /// Its entity.
    pub entity: Entity,
}

/// A connected peer left or lost its connection; its entity has been despawned.
#[derive(Event, Debug, Clone, Copy)]
pub struct PeerDisconnected {
    /// The peer.
    pub peer: PeerId,
    /// The entity it had.
    pub entity: Entity,
}

/// A peer's connection came up but its handshake failed (a different protocol or version):
/// it is ignored. The same is reported on its side.
#[derive(Event, Debug, Clone)]
pub struct PeerRefused {
    /// The peer.
    pub peer: PeerId,
    /// Why, for people to read.
    pub reason: String,
}

/// Input from a peer was dropped as bad: a packet that does not parse, a message too large or of
/// unknown kind, a write to something it does not own. The peer stays connected; the count is in
/// its [`PeerStats::rejected`](crate::PeerStats::rejected).
#[derive(Event, Debug, Clone)]
pub struct PeerInputRejected {
    /// The peer it came from.
    pub peer: PeerId,
    /// What was wrong.
    pub error: InputError,
}

/// The socket changed state (see [`PeerSocket::state`](crate::PeerSocket::state)).
#[derive(Event, Debug, Clone)]
pub struct SocketStateChanged {
    /// The new state.
    pub state: SocketState,
}
