//! The Bevy side: resources, system sets and the systems that drive the endpoint each frame.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bevy::ecs::world::World;
use bevy::prelude::*;
use bevy::time::Real;
use tracing::{info, warn};

use crate::PeerId;
use crate::endpoint::{Endpoint, EndpointEvent, Received};
use crate::protocol::ProtocolRegistry;
use crate::session::{InputError, PeerStats, SessionConfig};
use crate::transport::matchbox::{MatchboxConfig, MatchboxTransport};
use crate::transport::{SocketState, Transport, TransportIo};

/// Where the plugin's systems run. Receiving happens in `PreUpdate`, so `Update` sees this
/// frame's messages; sending in `PostUpdate`, so it sends what `Update` did.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeersyncSystems {
    /// `PreUpdate`: the transport fills [`TransportIo`] with what arrived.
    ReceivePackets,
    /// `PreUpdate`, after `ReceivePackets`: packets become peers, messages and replicated
    /// state.
    Receive,
    /// `PostUpdate`: messages and replicated changes are queued for each peer.
    Send,
    /// `PostUpdate`, after `Send`: queued data becomes packets and the transport sends them.
    SendPackets,
}

/// The socket the plugin sends and receives through. Insert one to join a room; call
/// [`PeerSocket::close`] or remove the resource to leave it (which closes every peer
/// connection and despawns the [`Peer`] entities).
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

    /// Leaves the room: closes every peer connection. The [`Peer`] entities are despawned on
    /// the next frame.
    pub fn close(&mut self) {
        self.transport.close();
        self.state = self.transport.state();
    }
}

/// A remote peer we are connected to, on its own entity: spawned when its connection is up and
/// its protocol matches ours, despawned when it goes. Add your own components to it freely.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
#[require(PeerStats)]
pub struct Peer {
    /// The peer's id.
    pub id: PeerId,
}

/// The connected peers and our own id, with the host among them.
#[derive(Resource, Debug, Default, Clone)]
pub struct ConnectedPeers {
    local: Option<PeerId>,
    peers: BTreeMap<PeerId, Entity>,
}

impl ConnectedPeers {
    /// Our id, once assigned.
    pub fn local_id(&self) -> Option<PeerId> {
        self.local
    }

    /// The entity of a connected peer.
    pub fn entity(&self, peer: PeerId) -> Option<Entity> {
        self.peers.get(&peer).copied()
    }

    /// Whether `peer` is connected.
    pub fn contains(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Connected remote peers, in id order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// How many remote peers are connected.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No remote peer is connected.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The host: the lowest id among us and the connected peers. Every peer computes it from the
    /// same ids, so all agree once their connections have settled; `None` until we have an id.
    pub fn host(&self) -> Option<PeerId> {
        let local = self.local?;
        Some(
            self.peers
                .keys()
                .next()
                .map_or(local, |first| local.min(*first)),
        )
    }

    /// Whether we are the host.
    pub fn is_host(&self) -> bool {
        self.local.is_some() && self.host() == self.local
    }
}

/// A peer connected and passed the protocol check; its [`Peer`] entity exists.
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
/// its [`PeerStats::rejected`].
#[derive(Event, Debug, Clone)]
pub struct PeerInputRejected {
    /// The peer it came from.
    pub peer: PeerId,
    /// What was wrong.
    pub error: InputError,
}

/// The socket changed state (see [`PeerSocket::state`]).
#[derive(Event, Debug, Clone)]
pub struct SocketStateChanged {
    /// The new state.
    pub state: SocketState,
}

/// Adds peer-to-peer networking: the socket, the peers as entities, typed messages (see
/// [`PeerMessageAppExt`](crate::PeerMessageAppExt)).
pub struct PeersyncPlugin {
    /// Protocol limits and timings; every peer of a room should use the same.
    pub session: SessionConfig,
    socket: Mutex<Option<PeerSocket>>,
}

impl Default for PeersyncPlugin {
    /// No socket: insert a [`PeerSocket`] when the game wants to join a room.
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            socket: Mutex::new(None),
        }
    }
}

impl PeersyncPlugin {
    /// Joins the room of `config` over WebRTC as soon as the app runs.
    pub fn new(config: MatchboxConfig) -> Self {
        Self::with_socket(PeerSocket::matchbox(config))
    }

    /// Starts with `socket`, e.g. one over [`MemoryTransport`](crate::transport::memory::MemoryTransport).
    pub fn with_socket(socket: PeerSocket) -> Self {
        Self {
            session: SessionConfig::default(),
            socket: Mutex::new(Some(socket)),
        }
    }

    /// Replaces the protocol limits and timings.
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }
}

/// Messages of each registered kind received this frame, waiting for their decoder.
#[derive(Resource, Default)]
pub(crate) struct KindQueues {
    pub(crate) queues: Vec<Option<Vec<Received>>>,
    /// App message kinds handed out so far.
    pub(crate) app_kinds: u16,
}

impl KindQueues {
    pub(crate) fn register(&mut self, kind: u16) {
        let index = usize::from(kind);
        if self.queues.len() <= index {
            self.queues.resize_with(index + 1, || None);
        }
        assert!(
            self.queues[index].is_none(),
            "message kind {kind} registered twice"
        );
        self.queues[index] = Some(Vec::new());
    }

    pub(crate) fn take(&mut self, kind: u16) -> Vec<Received> {
        self.queues
            .get_mut(usize::from(kind))
            .and_then(Option::as_mut)
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

/// The endpoint as a resource.
#[derive(Resource)]
pub(crate) struct NetEndpoint(pub(crate) Endpoint);

impl Plugin for PeersyncPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<TransportIo>()
            .init_resource::<ConnectedPeers>()
            .init_resource::<KindQueues>()
            .init_resource::<ProtocolRegistry>()
            .insert_resource(NetEndpoint(Endpoint::new(self.session.clone(), 0)))
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
                    (sync_protocol, receive_packets)
                        .chain()
                        .in_set(PeersyncSystems::ReceivePackets),
                    process_packets.in_set(PeersyncSystems::Receive),
                ),
            )
            .add_systems(
                PostUpdate,
                (flush, send_packets)
                    .chain()
                    .in_set(PeersyncSystems::SendPackets),
            );
        {
            let mut queues = app.world_mut().resource_mut::<KindQueues>();
            queues.register(crate::replication::wire::KIND_UPDATE);
            queues.register(crate::replication::wire::KIND_MUTATE);
        }
        crate::replication::build(app);
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
    let socket = &mut *socket;
    socket.transport.receive(time.elapsed(), &mut io);
    let state = socket.transport.state();
    if state != socket.state {
        match &state {
            SocketState::Connected(id) => info!("joined the room as {id}"),
            SocketState::Failed(reason) => warn!("socket failed: {reason}"),
            _ => {}
        }
        socket.state = state.clone();
        commands.trigger(SocketStateChanged { state });
    }
    peers.local = socket.local_id();
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn process_packets(
    time: Res<Time<Real>>,
    socket: Option<Res<PeerSocket>>,
    mut io: ResMut<TransportIo>,
    mut endpoint: ResMut<NetEndpoint>,
    mut queues: ResMut<KindQueues>,
    mut peers: ResMut<ConnectedPeers>,
    mut stats: Query<(&Peer, &mut PeerStats)>,
    mut commands: Commands,
) {
    let now = time.elapsed();
    let endpoint = &mut endpoint.0;
    let open = socket
        .as_ref()
        .is_some_and(|s| matches!(s.state, SocketState::Connecting | SocketState::Connected(_)));
    if !open {
        io.incoming.clear();
        io.links.clear();
        endpoint.disconnect_all();
        peers.local = None;
    }
    for link in io.links.drain(..) {
        endpoint.handle_link(now, link);
    }
    let mut received = Vec::new();
    for packet in io.incoming.drain(..) {
        endpoint.handle_packet(now, &packet, &mut received);
    }
    for message in received {
        match queues.queues.get_mut(usize::from(message.kind)) {
            Some(Some(queue)) => queue.push(message),
            _ => endpoint.reject(message.peer, InputError::UnknownKind(message.kind)),
        }
    }
    for event in endpoint.drain_events().collect::<Vec<_>>() {
        match event {
            EndpointEvent::Connected(peer) => {
                let entity = commands
                    .spawn((Peer { id: peer }, Name::new(format!("Peer {peer}"))))
                    .id();
                peers.peers.insert(peer, entity);
                info!("peer {peer} connected");
                commands.trigger(PeerConnected { peer, entity });
            }
            EndpointEvent::Disconnected(peer) => {
                if let Some(entity) = peers.peers.remove(&peer) {
                    commands.entity(entity).despawn();
                    info!("peer {peer} disconnected");
                    commands.trigger(PeerDisconnected { peer, entity });
                }
            }
            EndpointEvent::Refused { peer, reason } => {
                warn!("refused peer {peer}: {reason}");
                commands.trigger(PeerRefused { peer, reason });
            }
            EndpointEvent::Rejected { peer, error } => {
                log_rejected(peer, &error, endpoint.stats(peer));
                commands.trigger(PeerInputRejected { peer, error });
            }
        }
    }
    for (peer, mut peer_stats) in &mut stats {
        if let Some(current) = endpoint.stats(peer.id) {
            *peer_stats = current;
        }
    }
}

/// Logs bad input without letting a peer that floods garbage flood the log too.
fn log_rejected(peer: PeerId, error: &InputError, stats: Option<PeerStats>) {
    let count = stats.map_or(1, |s| s.rejected);
    if count <= 10 || count.is_multiple_of(1000) {
        warn!("dropped bad input from peer {peer} ({count} so far): {error}");
    }
}

/// Reports input that a layer above the endpoint dropped: counted, logged, and triggered as
/// [`PeerInputRejected`].
pub(crate) fn reject_input(world: &mut World, peer: PeerId, error: InputError) {
    let mut endpoint = world.resource_mut::<NetEndpoint>();
    endpoint.0.count_rejected(peer);
    log_rejected(peer, &error, endpoint.0.stats(peer));
    world.trigger(PeerInputRejected { peer, error });
}

fn flush(time: Res<Time<Real>>, mut endpoint: ResMut<NetEndpoint>, mut io: ResMut<TransportIo>) {
    let io = &mut *io;
    endpoint
        .0
        .flush(time.elapsed(), &mut |packet| io.outgoing.push(packet));
}

fn send_packets(socket: Option<ResMut<PeerSocket>>, mut io: ResMut<TransportIo>) {
    match socket {
        Some(mut socket) => socket.transport.send(&mut io),
        None => io.outgoing.clear(),
    }
}
