//! The socket resource: which transport the game plays over, and where it stands.

use std::time::Duration;

use bevy::prelude::*;

use crate::peer::PeerId;
use crate::transport::matchbox::{MatchboxConfig, MatchboxTransport};
use crate::transport::{SocketState, Transport, TransportIo};

/// The socket the plugin sends and receives through. Insert one to join a room; call
/// [`PeerSocket::close`] or remove the resource to leave it (which closes every peer
/// connection and despawns the [`Peer`](crate::Peer) entities).
#[derive(Resource)]
pub struct PeerSocket {
    transport: Box<dyn Transport>,
    state: SocketState,
}

impl PeerSocket {
    /// A socket over any [`Transport`].
    pub fn new(transport: impl Transport) -> Self {
        Self {
            transport: Box::new(transport),
            state: SocketState::Connecting,
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

    /// Leaves the room: closes every peer connection. The [`Peer`](crate::Peer) entities are
    /// despawned on the next frame.
    pub fn close(&mut self) {
        self.transport.close();
        self.state = self.transport.state();
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
