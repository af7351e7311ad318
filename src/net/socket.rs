//! The socket resource: which transport the game plays over, and where it stands.

use std::time::Duration;

use bevy::prelude::*;

use crate::peer::PeerId;
use crate::transport::matchbox::{MatchboxConfig, MatchboxTransport};
use crate::transport::{SocketState, Transport, TransportIo};

/// The socket the plugin sends and receives through. Insert one to join a room; call
/// [`PeerSocket::close`] to leave it (which tells every peer goodbye, closes every peer
/// connection and despawns the [`Peer`](crate::Peer) entities). Removing the resource leaves
/// without a goodbye: the others keep this player's entities for the resume grace.
#[derive(Resource)]
pub struct PeerSocket {
    transport: Box<dyn Transport>,
    state: SocketState,
    /// Where a [`PeerSocket::close`] stands.
    closing: Closing,
}

/// Leaving on purpose: the goodbyes go out with one frame's packets, and the socket lingers
/// about a round trip before it closes, so that they arrive before the links go down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    No,
    /// The goodbyes are to be sent with this frame's packets.
    Requested,
    /// They went out: close once this time has come.
    Lingering {
        until: Duration,
    },
}

impl PeerSocket {
    /// A socket over any [`Transport`].
    pub fn new(transport: impl Transport) -> Self {
        Self {
            transport: Box::new(transport),
            state: SocketState::Connecting,
            closing: Closing::No,
        }
    }

    /// A WebRTC socket that joins the room of `config` on the next frame.
    pub fn matchbox(config: MatchboxConfig) -> Self {
        Self::new(MatchboxTransport::new(config))
    }

    /// Where the socket stands with the lobby, as of this frame.
    pub fn state(&self) -> &SocketState {
        &self.state
    }

    /// Our id in the room, once the lobby assigned it.
    pub fn local_id(&self) -> Option<PeerId> {
        match self.state {
            SocketState::Connected(id) => Some(id),
            _ => None,
        }
    }

    /// Whether a connected peer is reached through a TURN relay; see [`Transport::relayed`].
    pub fn relayed(&self, peer: PeerId) -> Option<bool> {
        self.transport.relayed(peer)
    }

    /// Leaves the room on purpose: at the end of this frame (or of the next update, when called
    /// outside the frame loop) every peer is told goodbye, so it drops this player at once
    /// instead of keeping its entities for a resume, and the socket closes. The
    /// [`Peer`](crate::Peer) entities are despawned on the frame after.
    pub fn close(&mut self) {
        if self.closing == Closing::No {
            self.closing = Closing::Requested;
        }
    }

    /// Whether the goodbyes are due with this frame's packets (once per close).
    pub(crate) fn take_goodbye(&mut self, now: Duration, linger: Duration) -> bool {
        if self.closing != Closing::Requested {
            return false;
        }
        self.closing = Closing::Lingering {
            until: now + linger,
        };
        self.is_open()
    }

    /// After this frame's packets: closes the transport once the goodbyes had time to arrive.
    pub(crate) fn finish_closing(&mut self, now: Duration) {
        if let Closing::Lingering { until } = self.closing
            && (now >= until || !self.is_open())
        {
            self.closing = Closing::No;
            self.transport.close();
            self.state = self.transport.state();
        }
    }

    /// Leaves the room and joins it again as a new peer, if the transport can; see
    /// [`Transport::rejoin`].
    pub(crate) fn rejoin(&mut self) -> bool {
        self.transport.rejoin()
    }

    /// Whether packets may still flow: connecting or connected.
    pub(crate) fn is_open(&self) -> bool {
        matches!(
            self.state,
            SocketState::Connecting | SocketState::Connected(_)
        )
    }

    /// Moves what arrived into `io`; returns the new state if it changed.
    pub(crate) fn receive(&mut self, now: Duration, io: &mut TransportIo) -> Option<SocketState> {
        self.transport.receive(now, io);
        let state = self.transport.state();
        if state == self.state {
            return None;
        }
        self.state = state.clone();
        Some(state)
    }

    /// Sends and drains `io.outgoing`.
    pub(crate) fn send(&mut self, io: &mut TransportIo) {
        self.transport.send(io);
    }
}
