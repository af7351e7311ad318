//! The plugin a game adds: it wires the net layer and replication together.

use std::sync::Mutex;

use bevy::prelude::*;

use crate::identity::PlayerIdentity;
use crate::messages::EntityTranslation;
use crate::net::{NetPlugin, PeerSocket};
use crate::replication::ReplicationPlugin;
use crate::session::SessionConfig;
use crate::transport::matchbox::MatchboxConfig;

/// Adds peer-to-peer networking: the socket, the peers as entities, typed messages (see
/// [`PeerMessageAppExt`](crate::PeerMessageAppExt)) and replication (see
/// [`ReplicationAppExt`](crate::replication::ReplicationAppExt)).
pub struct PeersyncPlugin {
    /// Protocol limits and timings; every peer of a room should use the same.
    pub session: SessionConfig,
    /// Who this app plays as; random per run unless set.
    pub identity: PlayerIdentity,
    socket: Mutex<Option<PeerSocket>>,
}

impl Default for PeersyncPlugin {
    /// No socket: insert a [`PeerSocket`] when the game wants to join a room.
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            identity: PlayerIdentity::random(),
            socket: Mutex::new(None),
        }
    }
}

impl PeersyncPlugin {
    /// Joins the room of `config` over WebRTC as soon as the app runs.
    pub fn new(config: MatchboxConfig) -> Self {
        Self::with_socket(PeerSocket::matchbox(config))
    }

    /// Starts with `socket`, e.g. one over a [`MemoryNetwork`](crate::MemoryNetwork).
    pub fn with_socket(socket: PeerSocket) -> Self {
        Self {
            session: SessionConfig::default(),
            identity: PlayerIdentity::random(),
            socket: Mutex::new(Some(socket)),
        }
    }

    /// Plays as `identity`: keep its secret (or derive it from the game's login) to come back
    /// as the same player, with the same entities, after a restart within the resume grace.
    pub fn identity(mut self, identity: PlayerIdentity) -> Self {
        self.identity = identity;
        self
    }

    /// Replaces the protocol limits and timings.
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }
}

impl Plugin for PeersyncPlugin {
    fn build(&self, app: &mut App) {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
        app.add_plugins(NetPlugin {
            session: self.session.clone(),
            identity: self.identity.clone(),
            socket: Mutex::new(socket),
        })
        .add_plugins(ReplicationPlugin)
        .add_plugins(crate::messages::build_delivery_reports)
        // Messages with entity fields translate them through replication's net ids.
        .insert_resource(EntityTranslation {
            to_net: crate::replication::entity_to_net_now,
            to_local: crate::replication::entity_to_local,
        });
    }
}

/// A log filter that keeps the WebRTC stack (webrtc-rs and its `rtc-*` crates, which warn about
/// routine events such as a candidate pair not found yet) at `error`, and matchbox at `warn`.
/// Append it to your own filter, e.g. with Bevy's `LogPlugin`:
///
/// ```
/// # use bevy::prelude::*;
/// let filter = format!("info,{}", bevy_peersync::WEBRTC_LOG_FILTER);
/// # let _ = filter;
/// // app.add_plugins(DefaultPlugins.set(bevy::log::LogPlugin { filter, ..default() }));
/// ```
///
/// What matters to a game the plugin logs itself, in plain words: peers connecting, leaving or
/// timing out, the socket failing, input rejected. `RUST_LOG`, when set, replaces Bevy's filter.
pub const WEBRTC_LOG_FILTER: &str = "webrtc=error,rtc=error,rtc_crypto=error,\
rtc_datachannel=error,rtc_dtls=error,rtc_ice=error,rtc_interceptor=error,rtc_mdns=error,\
rtc_sctp=error,rtc_sdp=error,rtc_shared=error,rtc_srtp=error,rtc_stun=error,rtc_turn=error,\
matchbox_socket=warn";
