//! ECS replication over the peer mesh: what a game marks [`Replicated`] appears on every peer of
//! the room and follows its owner's changes.
//!
//! Every replicated entity has one owner, the only peer whose changes count: the peer that
//! spawned it, or the host for [`HostOwned`] world entities. Each owner sends, to every peer:
//!
//! - **updates** on the reliable channel: spawns, component insertions and removals, despawns
//!   and hand-overs, all of one network tick in one message, applied together;
//! - **mutations** on the unreliable channel: the components that changed since the last tick,
//!   packed into single packets. A packet that is lost is not resent as such: its values are
//!   sent again at the next tick unless newer ones went out since, so a lost packet never holds
//!   up the ones behind it, and receivers keep the newest value of each component.
//!
//! An owner may show an entity to some peers only ([`Audience`], [`GridInterest`]): the others
//! never hold it nor receive anything of it, and get it, as it is then, when it is shown to them
//! (see [`InterestAppExt`]).
//!
//! A peer that joins gets every entity it is shown (a snapshot), then the changes. When an
//! owner leaves, its entities are despawned everywhere, or taken over by the host if marked
//! [`HandToHostOnLeave`]; [`HostOwned`] entities move to whoever is host. Writes that do not
//! come from an entity's owner are rejected and reported as
//! [`PeerInputRejected`](crate::PeerInputRejected).

mod authority;
pub mod codec;
mod interest;
mod interpolation;
mod local_changes;
mod net_ids;
mod ownership;
mod receive;
mod registry;
mod send;
mod transform;
pub(crate) mod wire;

use std::time::Duration;

use bevy::ecs::entity::MapEntities;
use bevy::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::authority::Authority;
use self::codec::{CodecError, ComponentCodec, DeltaCodec, SerdeCodec};
pub use self::interest::{
    Audience, GridExempt, GridInterest, InterestAppExt, InterestStats, Viewpoint,
};
pub use self::interpolation::{
    Interpolate, InterpolationAppExt, InterpolationConfig, InterpolationDelay,
    InterpolationSystems, Snapshots,
};
use self::local_changes::{LocalChanges, forget_gone, on_unreplicated};
pub use self::net_ids::NetEntities;
use self::net_ids::NetIds;
pub(crate) use self::net_ids::{entity_to_local, entity_to_net_now};
use self::ownership::Ownership;
use self::registry::ReplicationRegistry;
pub use self::transform::TransformCodec;
use crate::identity::PlayerId;
use crate::net::{ConnectedPeers, KindQueues, PeersyncSystems};
use crate::peer::PeerId;

/// Marks an entity to replicate. Spawned by the local game, it is owned here ([`Owner::Local`]).
#[derive(Component, Debug, Default, Clone, Copy)]
#[require(Owner)]
pub struct Replicated;

/// Who may change a replicated entity.
#[derive(Component, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This peer: its changes are sent to the others.
    #[default]
    Local,
    /// Another player: the entity follows what it sends; local changes are overwritten.
    Remote {
        /// Who owns it. The same when the player comes back under a new connection after losing
        /// its own ([`PeerResumed`](crate::PeerResumed)): match on this to follow a player's
        /// entities (its avatar, its score) across reconnections.
        player: PlayerId,
        /// Its connection now, to send it messages; a resume changes it.
        peer: PeerId,
    },
}

impl Owner {
    /// Whether this peer owns the entity.
    pub fn is_local(&self) -> bool {
        matches!(self, Owner::Local)
    }

    /// The owning player, for an entity owned by another.
    pub fn player(&self) -> Option<PlayerId> {
        match self {
            Owner::Local => None,
            Owner::Remote { player, .. } => Some(*player),
        }
    }

    /// The owner's connection now, for an entity owned by another.
    pub fn peer(&self) -> Option<PeerId> {
        match self {
            Owner::Local => None,
            Owner::Remote { peer, .. } => Some(*peer),
        }
    }
}

/// `peer` as the owner of an entity, with the player it proved to be (or was, while it is
/// suspended).
pub(crate) fn remote_owner(peers: &ConnectedPeers, peer: PeerId) -> Owner {
    let player = peers.player_or_suspended(peer).unwrap_or_else(|| {
        // Owners are peers that sent something, or that a connected peer named and that this
        // one checked is in the room: their hello proved who they are.
        tracing::warn!("{peer} owns an entity here but its player is unknown");
        PlayerId([0; 32])
    });
    Owner::Remote { player, peer }
}

/// A world entity: owned by whoever is host, and passed on when the host changes. Spawn it on the
/// host only (see [`ConnectedPeers::is_host`](crate::ConnectedPeers::is_host)).
#[derive(Component, Debug, Default, Clone, Copy)]
pub struct HostOwned;

/// When the entity's owner leaves, the host takes it over instead of despawning it.
#[derive(Component, Debug, Default, Clone, Copy)]
pub struct HandToHostOnLeave;

/// The entity's room-wide id, set when it is first sent (or received). Entity references inside
/// replicated components travel as these, and a message can carry one to name an entity every
/// peer knows (look it up with [`NetEntities`]).
#[derive(
    Component, Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NetId(pub u64);

/// Replication settings. Every peer of a room should use the same.
#[derive(Resource, Debug, Clone, PartialEq)]
pub struct ReplicationConfig {
    /// Network ticks per second: how often changes are collected and sent. Default 60; 0 sends
    /// every frame.
    pub tick_rate: f64,
    /// How long a claimed hand-over may wait for the previous owner's consent (its hand-over or
    /// its departure) before it is rejected. Default 5 s.
    pub handover_timeout: Duration,
    /// Mutation messages held per peer while the update they depend on is still on its way;
    /// older ones are dropped beyond this. Default 256.
    pub mutation_buffer: usize,
    /// How long an entity made for a reference to a not-yet-received entity waits for that
    /// entity's spawn before it is despawned. Default 10 s.
    pub unresolved_reference_timeout: Duration,
    /// How many such entities the values of one peer may have waiting at once; further unknown
    /// references from it become [`Entity::PLACEHOLDER`]. Bounds what a peer sending garbage
    /// references can make this peer allocate. Default 4096.
    pub max_unresolved_references: usize,
    /// How many replicated entities one peer may own here. Spawns beyond it are dropped and
    /// reported ([`PeerInputRejected`](crate::PeerInputRejected) with
    /// [`InputError::OverLimit`](crate::InputError::OverLimit)), so a peer cannot make this one
    /// allocate without bound. Claims waiting for consent count too. Default 65 536.
    pub max_entities_per_peer: usize,
    /// Bytes per second replication may send each peer: its updates, snapshots and mutations
    /// (the messages' bodies; packet headers, acks and the game's own messages are not
    /// counted). Updates (reliable) always go and are charged; mutations take what is left,
    /// the entities whose values waited longest, weighted by their [`ReplicationPriority`],
    /// first, and the others keep waiting for a later tick: the newest value goes then, and
    /// every entity gets its turn. Up to 100 ms of unused budget is saved for a spike.
    /// [`ReplicationStats`] shows what waited. `None` sends every change at once.
    ///
    /// Default 128 KiB/s (about 1 Mbit/s per peer): some 160 entities whose transform
    /// changes every 60 Hz tick (13–14 bytes each, see BENCHMARKS.md), far more than a game
    /// moving tens of entities needs, while a peer in a room of 8 uploads at most about
    /// 7 Mbit/s in all, which common uplinks carry.
    pub bandwidth_budget: Option<u32>,
    /// Whether changed values of components with a [`DeltaCodec`] (as [`TransformCodec`]) go
    /// as differences from the newest value each peer acknowledged, rather than whole: a
    /// moving transform takes about 7 bytes instead of 15. A peer that lacks the value it was
    /// sent a difference from gets the value whole. Receivers read differences whatever this
    /// says. Default true.
    pub deltas: bool,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            tick_rate: 60.0,
            handover_timeout: Duration::from_secs(5),
            mutation_buffer: 256,
            unresolved_reference_timeout: Duration::from_secs(10),
            max_unresolved_references: 4096,
            max_entities_per_peer: 65_536,
            bandwidth_budget: Some(128 * 1024),
            deltas: true,
        }
    }
}

/// How much an entity's changes matter when the [bandwidth
/// budget](ReplicationConfig::bandwidth_budget) cannot send them all: each tick a changed value
/// waits, it accumulates this much, and the highest totals go first. An entity of priority 2
/// goes about twice as often as one of priority 1 when both wait; none is starved. Without this
/// component an entity has priority 1; values below 0.01 count as 0.01. Set it on entities owned
/// here (the player's avatar, what is near the camera); it has no effect while the budget
/// suffices, and it is not replicated.
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct ReplicationPriority(pub f32);

impl Default for ReplicationPriority {
    fn default() -> Self {
        Self(1.0)
    }
}

/// What the [bandwidth budget](ReplicationConfig::bandwidth_budget) held back, and what went
/// as [differences](ReplicationConfig::deltas), for each peer this app sends to; updated every
/// network tick.
#[derive(Resource, Debug, Default, Clone)]
pub struct ReplicationStats {
    peers: bevy::platform::collections::HashMap<PeerId, PeerReplicationStats>,
}

impl ReplicationStats {
    /// The figures of the mutations sent to `peer`, while it is connected.
    pub fn peer(&self, peer: PeerId) -> Option<&PeerReplicationStats> {
        self.peers.get(&peer)
    }

    /// Every connected peer's figures.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, &PeerReplicationStats)> {
        self.peers.iter().map(|(peer, stats)| (*peer, stats))
    }

    /// This tick's figures, for the connected peers.
    pub(crate) fn replace(&mut self, peers: impl Iterator<Item = (PeerId, PeerReplicationStats)>) {
        self.peers.clear();
        self.peers.extend(peers);
    }
}

/// What was sent to one peer and what waited ([`ReplicationStats`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerReplicationStats {
    /// Changed values held back by the budget, summed over ticks since the peer connected (a
    /// value that waited three ticks counts three).
    pub deferred: u64,
    /// Values waiting for budget after the last tick.
    pub waiting: usize,
    /// The most ticks a value waited for budget before it went, since the peer connected.
    pub longest_wait: u32,
    /// Values sent as differences from one the peer acknowledged
    /// ([`ReplicationConfig::deltas`]), since the peer connected.
    pub differences: u64,
    /// Differences the peer could not read, for want of the value they were from, and got
    /// whole again.
    pub refused_differences: u64,
}

/// Registers replicated components.
pub trait ReplicationAppExt {
    /// Replicates `C` with its serde representation (bincode). Every peer must register the same
    /// components in the same order (checked when peers connect).
    fn replicate<C>(&mut self) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable> + Serialize + DeserializeOwned;

    /// Replicates `C`, whose [`Entity`] fields are translated between peers (through
    /// [`NetId`]s). A reference to a replicated entity whose spawn has not reached the receiver
    /// yet points at an empty entity that becomes that replica when it arrives (given up after
    /// [`ReplicationConfig::unresolved_reference_timeout`]); a reference to an entity the
    /// sender does not replicate becomes [`Entity::PLACEHOLDER`].
    fn replicate_mapped<C>(&mut self) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable>
            + Serialize
            + DeserializeOwned
            + MapEntities
            + Clone;

    /// Replicates `C` with a custom encoding, e.g. a quantized one.
    fn replicate_with<C>(
        &mut self,
        encode: impl Fn(&C, &mut Vec<u8>) + Send + Sync + 'static,
        decode: impl Fn(&mut &[u8]) -> Result<C, CodecError> + Send + Sync + 'static,
    ) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable>;

    /// Replicates `C` with `codec`, e.g. `app.replicate_codec::<Transform>(TransformCodec::default())`.
    /// A codec with its own [`DeltaCodec`] (as [`TransformCodec`]) sends changes as differences.
    fn replicate_codec<C>(&mut self, codec: impl ComponentCodec<C>) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable>;

    /// Sends changes of `C`, already registered, as differences from a value each peer
    /// acknowledged, encoded by `delta` ([`ByteDelta`](codec::ByteDelta) suits any codec whose
    /// encoding keeps its length). Every peer must do the same.
    ///
    /// ```
    /// # use bevy::prelude::*;
    /// # use bevy_peersync::prelude::*;
    /// # use bevy_peersync::replication::codec::ByteDelta;
    /// #[derive(Component, serde::Serialize, serde::Deserialize)]
    /// struct Health { current: u32, max: u32, shield: u32 }
    ///
    /// let mut app = App::new();
    /// app.add_plugins((MinimalPlugins, PeersyncPlugin::default()))
    ///     .replicate::<Health>()
    ///     .replicate_delta::<Health>(ByteDelta);
    /// ```
    fn replicate_delta<C>(&mut self, delta: impl DeltaCodec) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable>;
}

impl ReplicationAppExt for App {
    fn replicate<C>(&mut self) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable> + Serialize + DeserializeOwned,
    {
        registry::register::<C>(self, Box::new(SerdeCodec), None);
        self
    }

    fn replicate_mapped<C>(&mut self) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable>
            + Serialize
            + DeserializeOwned
            + MapEntities
            + Clone,
    {
        registry::register::<C>(self, Box::new(SerdeCodec), Some(registry::mapper::<C>()));
        self
    }

    fn replicate_with<C>(
        &mut self,
        encode: impl Fn(&C, &mut Vec<u8>) + Send + Sync + 'static,
        decode: impl Fn(&mut &[u8]) -> Result<C, CodecError> + Send + Sync + 'static,
    ) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable>,
    {
        registry::register::<C>(self, Box::new((encode, decode)), None);
        self
    }

    fn replicate_codec<C>(&mut self, codec: impl ComponentCodec<C>) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable>,
    {
        registry::register::<C>(self, Box::new(codec), None);
        self
    }

    fn replicate_delta<C>(&mut self, delta: impl DeltaCodec) -> &mut Self
    where
        C: Component<Mutability = bevy::ecs::component::Mutable>,
    {
        registry::set_delta::<C>(self, Box::new(delta));
        self
    }
}

/// Hands an entity this peer owns to another peer.
pub trait TransferOwnershipExt {
    /// Gives the entity to `peer`: from the next network tick on, only its changes count. Does
    /// nothing (with a warning) if the entity is not owned here.
    fn transfer_ownership(&mut self, peer: PeerId) -> &mut Self;
}

impl TransferOwnershipExt for EntityCommands<'_> {
    fn transfer_ownership(&mut self, peer: PeerId) -> &mut Self {
        let entity = self.id();
        self.commands()
            .queue(move |world: &mut World| send::transfer(world, entity, peer));
        self
    }
}

/// This peer's session joined an older one: the world entities it owns (it was the younger
/// session's host, or was about to hand them to it) give way to that session's, for everyone.
/// Replicas stay: their owner does the same when it merges, and replicas of the older
/// session's world may already be here.
/// Replicated world entities, with their owner when they have one yet.
type WorldEntities<'w, 's> =
    Query<'w, 's, (Entity, Option<&'static Owner>), (With<Replicated>, With<HostOwned>)>;

fn drop_merged_world(
    _merged: On<crate::net::SessionMerged>,
    world_entities: WorldEntities,
    mut commands: Commands,
) {
    for (entity, owner) in &world_entities {
        if matches!(owner, None | Some(Owner::Local)) {
            commands.entity(entity).despawn();
        }
    }
}

/// On a replica whose owner lost its connection without a goodbye (killed, network lost, timed
/// out): it is kept, frozen, for
/// [`SessionConfig::resume_grace`](crate::SessionConfig::resume_grace) in case the player comes
/// back under a new id ([`PeerResumed`](crate::PeerResumed)); then it is its owner's again and
/// this marker goes, or it is despawned (an entity that was being handed to the player, and
/// that it had not claimed, goes back to its giver instead). Show it as the game likes (greyed
/// out, "reconnecting").
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Suspended;

/// Sets up replication; added by [`PeersyncPlugin`](crate::PeersyncPlugin).
pub(crate) struct ReplicationPlugin;

impl Plugin for ReplicationPlugin {
    fn build(&self, app: &mut App) {
        {
            let mut queues = app.world_mut().resource_mut::<KindQueues>();
            queues.register(wire::KIND_UPDATE);
            queues.register(wire::KIND_MUTATE);
            queues.register(wire::KIND_REFUSED);
        }
        app.init_resource::<ReplicationConfig>()
            .init_resource::<ReplicationRegistry>()
            .init_resource::<Ownership>()
            .init_resource::<NetIds>()
            .init_resource::<Authority>()
            .init_resource::<LocalChanges>()
            .init_resource::<ReplicationStats>()
            .init_resource::<send::SendState>()
            .init_resource::<receive::ReceiveState>()
            .init_resource::<InterestStats>()
            .add_observer(on_unreplicated)
            .add_observer(drop_merged_world)
            .add_systems(
                PreUpdate,
                (forget_gone, receive::receive)
                    .chain()
                    .in_set(PeersyncSystems::Receive),
            )
            .add_systems(
                PostUpdate,
                (forget_gone, send::send)
                    .chain()
                    .in_set(PeersyncSystems::Send),
            );
        interpolation::configure(app);
    }
}
