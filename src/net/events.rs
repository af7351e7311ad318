//! The lifecycle moments of peers and of the socket, as observer events.

use std::time::Duration;

use bevy::prelude::*;

use crate::error::InputError;
use crate::identity::PlayerId;
use crate::peer::PeerId;
use crate::transport::SocketState;

/// A peer connected and passed the protocol check; its [`Peer`](crate::Peer) entity exists.
#[derive(Event, Debug, Clone, Copy)]
pub struct PeerConnected {
    /// The peer.
    pub peer: PeerId,
    /// The player it proved to be.
    pub player: PlayerId,
    /// Its entity.
    pub entity: Entity,
}

/// A connected peer left or lost its connection; its entity has been despawned.
#[derive(Event, Debug, Clone, Copy)]
pub struct PeerDisconnected {
    /// The peer.
    pub peer: PeerId,
    /// The player it was.
    pub player: PlayerId,
    /// The entity it had.
    pub entity: Entity,
    /// Why it is gone.
    pub reason: DisconnectReason,
}

/// Why a peer is gone. A game may word its "player left" message after it, or treat a time-out
/// as a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// It said goodbye: it left the room on purpose ([`PeerSocket::close`](crate::PeerSocket::close),
    /// or its app exited). Its entities go at once.
    Left,
    /// The connection closed without a goodbye: the process was killed, or the network between
    /// us failed. Its entities are kept, [`Suspended`](crate::replication::Suspended), in case
    /// it comes back as itself within
    /// [`SessionConfig::resume_grace`](crate::SessionConfig::resume_grace).
    Lost,
    /// Nothing arrived from the peer for this long, more than
    /// [`SessionConfig::peer_timeout`](crate::SessionConfig::peer_timeout): it hangs, crashed,
    /// or lost its network. Whatever it sends later is ignored; when it recovers it rejoins
    /// under a new id and resumes as itself ([`PeerResumed`]) within the resume grace.
    TimedOut(Duration),
    /// This side ended it: the socket closed, or this app did not run for longer than the peer
    /// timeout (so every peer has dropped it) and it is rejoining the room.
    Local,
    /// The same player connected again under a new id (it rejoined the room): this older link
    /// is dropped, and [`PeerResumed`] follows.
    Rejoined,
}

/// A player that lost its connection came back under a new id within
/// [`SessionConfig::resume_grace`](crate::SessionConfig::resume_grace): it is the same player
/// (its hello proved it), its entities are its own again, with the same
/// [`NetId`](crate::replication::NetId)s, no longer
/// [`Suspended`](crate::replication::Suspended).
#[derive(Event, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerResumed {
    /// Its id now.
    pub peer: PeerId,
    /// The id it had.
    pub previous: PeerId,
    /// The player.
    pub player: PlayerId,
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

/// The host changed: the room settled (from `None`), the host left or stopped reaching everyone,
/// two sessions merged, or this peer left the room (to `None`). Fires once per change. The host
/// owns [`HostOwned`](crate::replication::HostOwned)
/// entities and receives [`Target::Host`](crate::Target::Host) messages.
#[derive(Event, Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostChanged {
    /// The host before.
    pub previous: Option<PeerId>,
    /// The host now.
    pub host: Option<PeerId>,
    /// The player the host was before. When it equals `host_player`, the host only came back
    /// under a new connection ([`PeerResumed`]): the same player is still host.
    pub previous_player: Option<PlayerId>,
    /// The player the host is now.
    pub host_player: Option<PlayerId>,
}

/// This peer's session met an older one (two peers that each started alone, a room split while
/// its lobby was away) and joined it. Only one world survives: the
/// [`HostOwned`](crate::replication::HostOwned) entities this peer owned are despawned for
/// everyone (the younger session's host owns them all, so its merge removes that world), and
/// the older session's world arrives from its host. Player-owned entities stay.
#[derive(Event, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionMerged {
    /// Founder of the session this peer was in.
    pub previous_founder: PeerId,
    /// Founder of the session it joined.
    pub founder: PeerId,
}
