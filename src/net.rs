//! The shared net layer under messages and replication: the socket, the endpoint, the peers as
//! entities, the lifecycle events, the per-kind message queues, and the systems that move
//! packets between the transport and the endpoint each frame.
//!
//! Messages and replication only ever talk to this layer (and never to each other): they read
//! their kinds from [`KindQueues`] in [`PeersyncSystems::Receive`], queue what they send on
//! [`NetEndpoint`] in [`PeersyncSystems::Send`], and report bad input with [`reject_input`].

mod continuity;
mod diagnostics;
mod events;
mod peers;
mod queues;
mod socket;

use std::sync::Mutex;
use std::time::Duration;

use bevy::prelude::*;
use bevy::time::Real;
use tracing::{info, warn};

pub use self::diagnostics::PeersyncDiagnostics;
use self::diagnostics::{NetClock, NetNow, publish_diagnostics};
pub use self::events::{
    DisconnectReason, HostChanged, PeerConnected, PeerDisconnected, PeerInputRejected, PeerRefused,
    PeerResumed, SessionMerged, SocketStateChanged,
};
pub use self::peers::{ConnectedPeers, Peer, PeerStats};
pub(crate) use self::queues::KindQueues;
pub use self::socket::PeerSocket;
use crate::channel::Channel;
use crate::endpoint::{Disconnect, Endpoint, EndpointEvent, FIRST_APP_KIND, KIND_TRACKED};
use crate::error::InputError;
use crate::identity::{PlayerId, PlayerIdentity};
use crate::membership::{KIND_MEMBERSHIP, Membership, MembershipEvent};
use crate::peer::PeerId;
use crate::protocol::ProtocolRegistry;
use crate::session::SessionConfig;
use crate::transport::{SocketState, TransportIo};

/// Where the plugin's systems run. Receiving happens in `PreUpdate`, so `Update` sees this
/// frame's messages; sending in `PostUpdate`, so it sends what `Update` did.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeersyncSystems {
    /// `PreUpdate`: the transport hands over what arrived; the endpoint turns it into peers
    /// (the [`Peer`] entities, [`PeerConnected`], [`PeerDisconnected`]) and into messages
    /// waiting for their decoders.
    ReceivePackets,
    /// `PreUpdate`, after `ReceivePackets`: messages are decoded (`FromPeer<M>`) and
    /// replicated state is applied to the world.
    Receive,
    /// `PostUpdate`: messages and replicated changes are queued for each peer.
    Send,
    /// `PostUpdate`, after `Send`: queued data becomes packets and the transport sends them.
    SendPackets,
}

/// The endpoint (every peer's session and the handshake) as a resource.
#[derive(Resource)]
pub(crate) struct NetEndpoint(pub(crate) Endpoint);

/// This peer's view of the session: seniority and the host election (`membership.rs`).
#[derive(Resource, Default)]
pub(crate) struct NetMembership(Membership);

/// Sets up the net layer; added by [`PeersyncPlugin`](crate::PeersyncPlugin).
pub(crate) struct NetPlugin {
    pub(crate) session: SessionConfig,
    /// Who this app plays as.
    pub(crate) identity: PlayerIdentity,
    /// The socket to start with, taken when the plugin is built.
    pub(crate) socket: Mutex<Option<PeerSocket>>,
}

impl Plugin for NetPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<TransportIo>()
            .init_resource::<ConnectedPeers>()
            .init_resource::<KindQueues>()
            .init_resource::<ProtocolRegistry>()
            .init_resource::<NetMembership>()
            .init_resource::<NetClock>()
            .insert_resource(NetEndpoint(Endpoint::new(
                self.session.clone(),
                0,
                self.identity.clone(),
            )))
            .configure_sets(
                PreUpdate,
                (PeersyncSystems::ReceivePackets, PeersyncSystems::Receive).chain(),
            )
            .configure_sets(
                PostUpdate,
                (PeersyncSystems::Send, PeersyncSystems::SendPackets).chain(),
            )
            .add_systems(
                PreUpdate,
                (
                    sync_protocol,
                    receive_packets,
                    feed_endpoint,
                    publish_peers,
                    elect_host,
                    publish_diagnostics,
                    announce_host,
                )
                    .chain()
                    .in_set(PeersyncSystems::ReceivePackets),
            )
            .add_systems(
                PostUpdate,
                (flush, send_packets)
                    .chain()
                    .in_set(PeersyncSystems::SendPackets),
            );
        app.world_mut()
            .resource_mut::<KindQueues>()
            .register(KIND_MEMBERSHIP);
        app.world_mut()
            .resource_mut::<ConnectedPeers>()
            .set_local_player(self.identity.player());
        diagnostics::register(app);
        if let Some(socket) = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take() {
            app.insert_resource(socket);
        }
    }
}

/// Keeps the hash the handshake sends in step with the registrations (made while the app is
/// built, so in practice this runs once).
fn sync_protocol(registry: Res<ProtocolRegistry>, mut endpoint: ResMut<NetEndpoint>) {
    if registry.is_changed() {
        endpoint.0.set_protocol_hash(registry.hash());
    }
}

fn receive_packets(
    time: Res<Time<Real>>,
    socket: Option<ResMut<PeerSocket>>,
    mut io: ResMut<TransportIo>,
    mut peers: ResMut<ConnectedPeers>,
    mut commands: Commands,
) {
    let Some(mut socket) = socket else {
        return;
    };
    if let Some(state) = socket.receive(time.elapsed(), &mut io) {
        match &state {
            SocketState::Connected(id) => info!("joined the room as {id}"),
            SocketState::Failed(reason) => warn!("socket failed: {reason}"),
            _ => {}
        }
        commands.trigger(SocketStateChanged { state });
    }
    peers.set_local(socket.local_id());
}

/// Feeds links and packets to the endpoint and queues the messages by kind for their
/// decoders.
fn feed_endpoint(
    mut clock: NetNow,
    socket: Option<Res<PeerSocket>>,
    mut io: ResMut<TransportIo>,
    mut endpoint: ResMut<NetEndpoint>,
    mut queues: ResMut<KindQueues>,
    mut peers: ResMut<ConnectedPeers>,
) {
    let now = clock.now();
    let endpoint = &mut endpoint.0;
    endpoint.set_local(socket.as_ref().and_then(|socket| socket.local_id()));
    if !socket.as_ref().is_some_and(|socket| socket.is_open()) {
        io.incoming.clear();
        io.links.clear();
        // Left on purpose: nobody will come back to us. Failed: we rejoin, and they may.
        let closed = socket
            .as_ref()
            .is_none_or(|socket| *socket.state() == SocketState::Closed);
        endpoint.disconnect_all(if closed {
            Disconnect::Closed
        } else {
            Disconnect::Local
        });
        peers.set_local(None);
    }
    for link in io.links.drain(..) {
        endpoint.handle_link(now, link);
    }
    let mut received = Vec::new();
    for packet in io.incoming.drain(..) {
        endpoint.handle_packet(now, &packet, &mut received);
    }
    for mut message in received {
        if message.kind == KIND_TRACKED {
            match unwrap_tracked(&message.body) {
                Ok((kind, ticket, body)) => {
                    message.kind = kind;
                    message.ticket = Some(ticket);
                    message.body = body;
                }
                Err(error) => {
                    endpoint.reject(message.peer, InputError::Malformed(error));
                    continue;
                }
            }
        }
        if let Err(message) = queues.push(message) {
            endpoint.reject(message.peer, InputError::UnknownKind(message.kind));
        }
    }
}

/// A tracked app message: its app kind, its ticket, and the message itself.
fn unwrap_tracked(body: &bytes::Bytes) -> Result<(u16, u64, bytes::Bytes), crate::wire::WireError> {
    let mut reader = crate::wire::Reader::new(body);
    let kind = reader.varint_max(u64::from(crate::session::MAX_KIND), "tracked kind")? as u16;
    if kind < FIRST_APP_KIND {
        return Err(crate::wire::WireError::OutOfRange("tracked kind"));
    }
    let ticket = reader.varint()?;
    let start = body.len() - reader.remaining();
    Ok((kind, ticket, body.slice(start..)))
}

/// Turns the endpoint's events into peer entities and observer events, and refreshes each
/// peer's [`PeerStats`].
fn publish_peers(
    time: Res<Time<Real>>,
    socket: Option<ResMut<PeerSocket>>,
    mut endpoint: ResMut<NetEndpoint>,
    mut peers: ResMut<ConnectedPeers>,
    mut stats: Query<(&Peer, &mut PeerStats)>,
    mut commands: Commands,
) {
    let now = time.elapsed();
    let endpoint = &mut endpoint.0;
    peers
        .continuity
        .begin_frame(now, endpoint.config.resume_grace);
    let mut rejoin = false;
    for event in endpoint.drain_events().collect::<Vec<_>>() {
        match event {
            EndpointEvent::Connected(peer) => {
                let Some(player) = endpoint.player_of(peer) else {
                    continue; // verified peers always have one
                };
                let entity = commands
                    .spawn((Peer { id: peer, player }, Name::new(format!("Peer {peer}"))))
                    .id();
                peers.insert(peer, player, entity);
                commands.trigger(PeerConnected {
                    peer,
                    player,
                    entity,
                });
                match peers.continuity.resume(peer, player) {
                    Some(previous) => {
                        info!("player {player} is back, as peer {peer} (was {previous})");
                        commands.trigger(PeerResumed {
                            peer,
                            previous,
                            player,
                        });
                    }
                    None => info!("peer {peer} connected (player {player})"),
                }
            }
            EndpointEvent::Disconnected { peer, reason } => {
                let reason_seen = reason;
                let reason = match reason {
                    Disconnect::Goodbye => DisconnectReason::Left,
                    Disconnect::LinkDown => DisconnectReason::Lost,
                    Disconnect::Silent(silent) => DisconnectReason::TimedOut(silent),
                    Disconnect::Local | Disconnect::Closed => DisconnectReason::Local,
                    Disconnect::Replaced => DisconnectReason::Rejoined,
                };
                if let Some((entity, player)) = peers.remove(peer) {
                    commands.entity(entity).despawn();
                    match reason {
                        DisconnectReason::TimedOut(silent) => {
                            warn!("peer {peer} dropped: nothing heard from it for {silent:?}")
                        }
                        DisconnectReason::Left => info!("peer {peer} left"),
                        _ => info!("peer {peer} lost its connection"),
                    }
                    if !matches!(reason_seen, Disconnect::Goodbye | Disconnect::Closed) {
                        peers.continuity.suspend(peer, player, now);
                    }
                    commands.trigger(PeerDisconnected {
                        peer,
                        player,
                        entity,
                        reason,
                    });
                }
            }
            EndpointEvent::Stalled { gap } => {
                warn!(
                    "this app did not run for {gap:?}, longer than the peer timeout: every peer \
                     has dropped it, so it rejoins the room"
                );
                rejoin = true;
            }
            EndpointEvent::Isolated => {
                warn!(
                    "every peer went silent and none is left: this app's network probably \
                     dropped, so it rejoins the room to find them again"
                );
                rejoin = true;
            }
            EndpointEvent::Refused { peer, reason } => {
                warn!("refused peer {peer}: {reason}");
                commands.trigger(PeerRefused { peer, reason });
            }
            EndpointEvent::Rejected { peer, error } => {
                log_rejected(peer, &error, endpoint.rejected_count(peer));
                commands.trigger(PeerInputRejected { peer, error });
            }
        }
    }
    for (peer, mut peer_stats) in &mut stats {
        if let Some(current) = endpoint.stats(peer.id) {
            *peer_stats = current.into();
        }
    }
    if rejoin
        && let Some(mut socket) = socket
        && !socket.rejoin()
    {
        warn!("this socket's transport cannot rejoin: close it and insert a new PeerSocket");
    }
}

/// Keeps the membership in step with the connected peers, reads and sends announcements, and
/// publishes the elected host on [`ConnectedPeers`].
fn elect_host(
    time: Res<Time<Real>>,
    mut endpoint: ResMut<NetEndpoint>,
    mut membership: ResMut<NetMembership>,
    mut peers: ResMut<ConnectedPeers>,
    mut queues: ResMut<KindQueues>,
    mut commands: Commands,
) {
    let now = time.elapsed();
    let endpoint = &mut endpoint.0;
    let membership = &mut membership.0;
    membership.sync_peers(now, &endpoint.config, peers.local_id(), peers.ids());
    for message in queues.take(KIND_MEMBERSHIP) {
        if let Err(error) = membership.handle_announcement(message.peer, &message.body) {
            endpoint.reject(message.peer, error);
        }
    }
    membership.update(now, crate::platform::unix_millis(), &endpoint.config);
    membership.poll_transmit(|peer, body| {
        // Only connected peers are announced to; one that left meanwhile needs nothing.
        let _ = endpoint.send(peer, Channel::Reliable, KIND_MEMBERSHIP, body, None);
    });
    peers.set_host(membership.host());
    peers.set_successor(membership.successor());
    for event in membership.drain_events() {
        match event {
            MembershipEvent::Founded => info!("nobody else here: this peer founded the session"),
            MembershipEvent::Joined => {}
            MembershipEvent::Merged { from, into } => {
                info!(
                    "this session met an older one (founded by {}) and joined it; its world \
                     entities give way to the older session's",
                    into.founder
                );
                commands.trigger(SessionMerged {
                    previous_founder: from.founder,
                    founder: into.founder,
                });
            }
        }
    }
}

/// Triggers [`HostChanged`] when the host differs from the one seen last frame.
fn announce_host(
    peers: Res<ConnectedPeers>,
    mut last: Local<(Option<PeerId>, Option<PlayerId>)>,
    mut commands: Commands,
) {
    let host = peers.host();
    if host != last.0 {
        let host_player = host.and_then(|host| {
            if Some(host) == peers.local_id() {
                peers.local_player()
            } else {
                peers.player(host)
            }
        });
        let (previous, previous_player) = std::mem::replace(&mut *last, (host, host_player));
        commands.trigger(HostChanged {
            previous,
            host,
            previous_player,
            host_player,
        });
    }
}

/// Logs bad input without letting a peer that floods garbage flood the log too.
fn log_rejected(peer: PeerId, error: &InputError, count: u64) {
    if count <= 10 || count.is_multiple_of(1000) {
        warn!("dropped bad input from peer {peer} ({count} so far): {error}");
    }
}

/// Reports input that a layer above the endpoint dropped: counted, logged, and triggered as
/// [`PeerInputRejected`].
pub(crate) fn reject_input(world: &mut World, peer: PeerId, error: InputError) {
    let mut endpoint = world.resource_mut::<NetEndpoint>();
    endpoint.0.count_rejected(peer);
    log_rejected(peer, &error, endpoint.0.rejected_count(peer));
    world.trigger(PeerInputRejected { peer, error });
}

/// Packs what the sessions queued into packets. A socket that is closing (or an app that is
/// exiting) first says goodbye to every peer, so that they drop this player at once instead of
/// keeping its entities for a resume.
fn flush(
    mut clock: NetNow,
    socket: Option<ResMut<PeerSocket>>,
    mut exit: MessageReader<AppExit>,
    mut endpoint: ResMut<NetEndpoint>,
    mut peers: ResMut<ConnectedPeers>,
    mut io: ResMut<TransportIo>,
) {
    let io = &mut *io;
    let now = clock.now();
    let exiting = exit.read().next().is_some();
    // Long enough for the goodbye to arrive before the links go down: a round trip (the
    // goodbye takes half of one), at least 50 ms, at most half a second.
    let linger = endpoint
        .0
        .longest_rtt()
        .unwrap_or(Duration::from_millis(100))
        .clamp(Duration::from_millis(50), Duration::from_millis(500));
    let closing = socket.is_some_and(|mut socket| socket.take_goodbye(now, linger));
    if exiting || closing {
        endpoint.0.goodbye_all();
        peers.continuity.clear();
    }
    endpoint
        .0
        .flush(now, &mut |packet| io.outgoing.push(packet));
}

fn send_packets(
    mut clock: NetNow,
    socket: Option<ResMut<PeerSocket>>,
    mut io: ResMut<TransportIo>,
) {
    match socket {
        Some(mut socket) => {
            socket.send(&mut io);
            socket.finish_closing(clock.now());
        }
        None => io.outgoing.clear(),
    }
}
