//! The byte seam between the network and everything above it.
//!
//! A [`Transport`] moves packets between the wire and the [`TransportIo`] buffers: per peer and
//! per [`Channel`], bytes in and bytes out, plus the links that came up or went down. Nothing
//! above this module knows how the bytes travel, which is why the same replication code runs
//! over WebRTC ([`MatchboxTransport`]) and over the deterministic in-process network of the
//! tests ([`MemoryTransport`], made by [`MemoryNetwork`](crate::MemoryNetwork)).

mod conditioned;
pub(crate) mod matchbox;
pub(crate) mod memory;

use std::fmt;
use std::time::Duration;

use bevy::prelude::Resource;
use bytes::Bytes;

pub use self::conditioned::ConditionedTransport;
pub use self::matchbox::MatchboxTransport;
pub use self::memory::MemoryTransport;
use crate::channel::Channel;
use crate::peer::PeerId;

/// One packet with the peer it comes from or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The remote peer.
    pub peer: PeerId,
    /// The data channel it travels on.
    pub channel: Channel,
    /// Its bytes; never empty.
    pub bytes: Bytes,
}

/// A change of a link to a remote peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// The data channels to the peer are open.
    Up(PeerId),
    /// The peer is gone: it left the room, or its connection broke.
    Down(PeerId),
}

/// The buffers of the byte seam. The transport fills `incoming` and `links` in
/// [`PeersyncSystems::ReceivePackets`](crate::PeersyncSystems::ReceivePackets) and drains
/// `outgoing` in [`PeersyncSystems::SendPackets`](crate::PeersyncSystems::SendPackets).
#[derive(Resource, Debug, Default)]
pub struct TransportIo {
    /// Packets received since the last frame, in arrival order.
    pub incoming: Vec<Packet>,
    /// Packets to send at the end of this frame.
    pub outgoing: Vec<Packet>,
    /// Links that came up or went down since the last frame, in order.
    pub links: Vec<LinkEvent>,
}

/// Where the socket stands with the lobby.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SocketState {
    /// Not opened yet, or reaching the lobby.
    #[default]
    Connecting,
    /// In the room, with this id: peers can come and go.
    Connected(PeerId),
    /// Could not reach the lobby, lost it, or the socket broke; the reason is for people to
    /// read. Final, except after a panic of matchbox's message loop (caused by what a remote
    /// peer sent): the matchbox transport then rejoins the room by itself, under a new id.
    Failed(String),
    /// Closed by the game.
    Closed,
}

impl fmt::Display for SocketState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketState::Connecting => f.write_str("connecting"),
            SocketState::Connected(id) => write!(f, "connected as {id}"),
            SocketState::Failed(reason) => write!(f, "failed: {reason}"),
            SocketState::Closed => f.write_str("closed"),
        }
    }
}

/// A way of moving packets between peers.
///
/// Implement it to bring another transport; the two here are [`MatchboxTransport`] (WebRTC)
/// and [`MemoryTransport`] (an in-process network for tests).
pub trait Transport: Send + Sync + 'static {
    /// Moves what arrived since the last call into `io` (packets and link changes). Called once
    /// per frame with the time since the app started; the first call opens the connection.
    fn receive(&mut self, now: Duration, io: &mut TransportIo);

    /// Sends and drains `io.outgoing`. Must not block.
    fn send(&mut self, io: &mut TransportIo);

    /// Where the connection stands.
    fn state(&self) -> SocketState;

    /// Ends every connection. Later calls of [`Transport::receive`] report no more packets.
    fn close(&mut self);

    /// Leaves the room and joins it again, under a new id: every link goes down (reported by
    /// the next [`Transport::receive`]) and the state goes back to
    /// [`SocketState::Connecting`]. The plugin calls this when its own frame loop stalled for
    /// longer than the peer timeout, since every peer has dropped it by then. Returns `false`
    /// (the default) when the transport cannot.
    fn rejoin(&mut self) -> bool {
        false
    }

    /// Whether a connected peer's traffic goes through a TURN relay. A relay costs the
    /// operator bandwidth and players latency, and NAT trouble is otherwise invisible: the game
    /// may want to show it, and the NAT tests prove with it that TURN, not luck, connected
    /// them. `None` while unknown (WebRTC reports the path about a second after connecting) and
    /// for transports without relays (the default).
    fn relayed(&self, _peer: PeerId) -> Option<bool> {
        None
    }
}
