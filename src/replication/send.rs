//! The owner's side: each network tick, collect what changed on the entities owned here, and
//! send updates (reliable) and mutations (unreliable, resent when lost) to every peer.
//!
//! A tick runs as named phases over one [`Tick`] context: keep each peer's stream in step with
//! who is connected, take in deliveries, announce entities that became ours, hand entities
//! over, turn despawns and removals into operations, collect changed values, then send updates,
//! snapshots for newcomers, and mutations. Between collecting and sending, the interest phase
//! ([`interest`]) decides what each peer is shown, and the sending phases follow its views.
//! Each peer's bandwidth budget (`budget.rs`) is refilled first, charged with the updates and
//! snapshots, and what is left goes to mutations.

mod baselines;
mod budget;
mod interest;
mod mutations;
mod stream;
mod updates;

use std::time::Duration;

use bevy::ecs::change_detection::Tick as ChangeTick;
use bevy::ecs::query::QueryState;
use bevy::platform::collections::{HashMap, HashSet};
use bevy::prelude::*;
use bevy::time::Real;
use bytes::Bytes;

use self::baselines::Refusal;
use self::budget::Rate;
use self::mutations::{ChangedValue, MutationTick, ValueKey};
use self::stream::PeerStream;
use self::updates::{components_of, encode_updates};
use super::local_changes::{Abandoned, LocalChanges};
use super::net_ids::NetIds;
use super::ownership::{Owned, Ownership};
use super::registry::{Change, ReplicationRegistry};
use super::wire::{ComponentValue, KIND_UPDATE, Spawn, SpawnFlags, UpdateOp};
use super::{
    HandToHostOnLeave, HostOwned, NetId, Owner, Replicated, ReplicationConfig, ReplicationStats,
};
use crate::channel::Channel;
use crate::endpoint::Endpoint;
use crate::net::{ConnectedPeers, NetEndpoint};
use crate::peer::PeerId;

/// Replicated entities with what deciding to announce them needs.
type AnnounceQuery = QueryState<(
    Entity,
    Ref<'static, Owner>,
    Ref<'static, Replicated>,
    Option<&'static NetId>,
    Has<HostOwned>,
    Has<HandToHostOnLeave>,
)>;

/// The sending side's own state.
#[derive(Resource, Default)]
pub(crate) struct SendState {
    tick: u32,
    accumulator: Duration,
    /// Change ticks up to this one were collected by the previous network tick.
    since: Option<ChangeTick>,
    next_token: u64,
    /// Transfers of ownership the game asked for, done at the next network tick.
    transfers: Vec<(Entity, PeerId)>,
    peers: HashMap<PeerId, PeerStream>,
    announce_query: Option<AnnounceQuery>,
    /// What each peer is shown ([`interest`]).
    interest: interest::Interest,
    /// Values peers could not read as differences, to send whole ([`baselines`]).
    refused: Vec<Refusal>,
}

impl SendState {
    /// Whether a network tick is due; keeps time between frames.
    fn due(&mut self, delta: Duration, tick_rate: f64) -> bool {
        if tick_rate <= 0.0 {
            return true;
        }
        let period = Duration::from_secs_f64(1.0 / tick_rate);
        self.accumulator += delta;
        if self.accumulator < period {
            return false;
        }
        // At most one tick per frame, and no burst after a long frame.
        self.accumulator = (self.accumulator - period).min(period);
        true
    }
}

/// Records that the game hands `entity` to `peer`; done at the next network tick.
pub(crate) fn transfer(world: &mut World, entity: Entity, peer: PeerId) {
    let owned_here = world
        .get::<Owner>(entity)
        .is_some_and(|owner| owner.is_local())
        && world.get::<Replicated>(entity).is_some();
    if !owned_here {
        tracing::warn!(
            "cannot hand {entity} over to {peer}: it is not a replicated entity owned here"
        );
        return;
    }
    world
        .resource_mut::<SendState>()
        .transfers
        .push((entity, peer));
}

/// The send system: runs in `PostUpdate`, in [`PeersyncSystems::Send`](crate::PeersyncSystems).
pub(crate) fn send(world: &mut World) {
    let delta = world.resource::<Time<Real>>().delta();
    let now = world.resource::<Time<Real>>().elapsed();
    let config = world.resource::<ReplicationConfig>().clone();
    let peers = world.resource::<ConnectedPeers>().clone();
    let Some(local) = peers.local_id() else {
        // Not in a room: nothing to send, and nothing worth remembering.
        let mut changes = world.resource_mut::<LocalChanges>();
        changes.removed_components.clear();
        changes.despawned.clear();
        changes.abandoned.clear();
        return;
    };
    baselines::take_refusals(world);
    world.resource_scope(|world, mut state: Mut<SendState>| {
        state.interest.note_resumes(&peers);
        if !state.due(delta, config.tick_rate) {
            return;
        }
        let tick_period = if config.tick_rate > 0.0 {
            Duration::from_secs_f64(1.0 / config.tick_rate)
        } else {
            delta
        };
        let changes = {
            let mut changes = world.resource_mut::<LocalChanges>();
            LocalChanges {
                removed_components: std::mem::take(&mut changes.removed_components),
                despawned: std::mem::take(&mut changes.despawned),
                abandoned: std::mem::take(&mut changes.abandoned),
                gone: Vec::new(),
            }
        };
        world.resource_scope(|world, mut ownership: Mut<Ownership>| {
            world.resource_scope(|world, mut net_ids: Mut<NetIds>| {
                world.resource_scope(|world, mut registry: Mut<ReplicationRegistry>| {
                    world.resource_scope(|world, mut endpoint: Mut<NetEndpoint>| {
                        state.tick += 1;
                        let max_mutation = endpoint.0.config.max_unreliable_message();
                        let budget = config
                            .bandwidth_budget
                            .map(|bytes_per_sec| Rate::new(bytes_per_sec, max_mutation));
                        let mut tick = Tick {
                            tick: state.tick,
                            this_run: world.change_tick(),
                            world,
                            state: &mut state,
                            ownership: &mut ownership,
                            net_ids: &mut net_ids,
                            registry: &mut registry,
                            endpoint: &mut endpoint.0,
                            peers: &peers,
                            local,
                            now,
                            tick_period,
                            budget,
                            deltas: config.deltas,
                            ops: Vec::new(),
                            touched: Vec::new(),
                            spawned_now: HashSet::new(),
                            handed_now: Vec::new(),
                            values: Vec::new(),
                            changed: Vec::new(),
                        };
                        tick.run(changes);
                    });
                });
            });
        });
    });
}

/// An entity handed over this tick.
struct HandedOver {
    entity: Entity,
    owned: Owned,
    to: PeerId,
}

/// One network tick's work.
struct Tick<'a> {
    world: &'a mut World,
    state: &'a mut SendState,
    ownership: &'a mut Ownership,
    net_ids: &'a mut NetIds,
    registry: &'a mut ReplicationRegistry,
    endpoint: &'a mut Endpoint,
    peers: &'a ConnectedPeers,
    local: PeerId,
    now: Duration,
    tick_period: Duration,
    /// Each peer's bandwidth budget, if there is one.
    budget: Option<Rate>,
    /// Whether values go as differences where they can.
    deltas: bool,
    tick: u32,
    this_run: ChangeTick,
    /// This tick's update operations, in order.
    ops: Vec<UpdateOp>,
    /// Entities owned here that the operations concern: their mutations need this update.
    touched: Vec<Entity>,
    spawned_now: HashSet<Entity>,
    handed_now: Vec<HandedOver>,
    /// Encoded changed values; [`ChangedValue::range`] points into it.
    values: Vec<u8>,
    /// Mutated values (not insertions), sorted by component once collected.
    changed: Vec<ChangedValue>,
}

impl Tick<'_> {
    fn run(&mut self, changes: LocalChanges) {
        self.sync_peers();
        self.take_deliveries();
        self.refused_baselines();
        self.announce();
        self.hand_over();
        self.despawns_and_removals(changes);
        self.collect_values();
        self.interest();
        self.send_updates();
        self.send_snapshots();
        self.send_mutations();
        if !self.ops.is_empty() {
            // Some entities may have stopped being ours (handed over, despawned).
            for stream in self.state.peers.values_mut() {
                stream.forget_unowned(self.ownership);
            }
        }
        self.state.interest.finish();
        self.state.since = Some(self.this_run);
        self.publish_stats();
    }

    /// A new peer needs a snapshot; a gone one is forgotten. Every budget earns this tick's
    /// bytes.
    fn sync_peers(&mut self) {
        let peers = self.peers;
        self.state.peers.retain(|peer, _| peers.contains(*peer));
        for peer in peers.ids() {
            let stream = self
                .state
                .peers
                .entry(peer)
                .or_insert_with(PeerStream::new_peer);
            if let Some(rate) = self.budget {
                stream.budget.refill(self.now, rate);
            }
        }
    }

    /// What the budgets held back, for the game to see.
    fn publish_stats(&mut self) {
        let mut stats = self.world.resource_mut::<ReplicationStats>();
        stats.replace(
            self.state
                .peers
                .iter()
                .map(|(peer, stream)| (*peer, stream.stats)),
        );
    }

    /// Charges `peer`'s budget with reliable `messages`: they always go, and mutations take
    /// what is left.
    fn charge_reliable(&mut self, peer: PeerId, messages: &[Bytes]) {
        if let (Some(rate), Some(stream)) = (self.budget, self.state.peers.get_mut(&peer)) {
            let bytes = messages.iter().map(Bytes::len).sum();
            stream.budget.charge(bytes, rate);
        }
    }

    /// Acknowledged values need no resend; lost ones are due at once.
    fn take_deliveries(&mut self) {
        let streams = &mut self.state.peers;
        self.endpoint.drain_deliveries(|peer, token, delivery| {
            if let Some(stream) = streams.get_mut(&peer) {
                stream.delivered(token, delivery);
            }
        });
    }

    /// Entities that became ours (spawned here, or taken over) are announced with a spawn.
    fn announce(&mut self) {
        let since = self.state.since;
        let query = self
            .state
            .announce_query
            .get_or_insert_with(|| self.world.query_filtered::<_, ()>());
        let mut announced = Vec::new();
        for (entity, owner, replicated, net_id, host_owned, hand_to_host) in query.iter(self.world)
        {
            if !owner.is_local() || self.ownership.is_owned(entity) {
                continue;
            }
            let fresh = since.is_none_or(|since| {
                replicated.is_added_after(since) || owner.is_changed_after(since)
            });
            if fresh {
                let flags = SpawnFlags {
                    host_owned,
                    hand_to_host,
                };
                announced.push((entity, net_id.map(|id| id.0), flags));
            }
        }
        let mut fresh = Vec::with_capacity(announced.len());
        for (entity, net_id, flags) in announced {
            let net_id = net_id.unwrap_or_else(|| {
                let id = self.net_ids.allocate();
                self.world.entity_mut(entity).insert(NetId(id));
                id
            });
            self.net_ids.bind(net_id, entity);
            let adopted = self.ownership.take_adopted(entity).is_some();
            let owned = self.ownership.announce(entity, net_id, flags, self.tick);
            if adopted {
                self.state.interest.adopted(owned.wire);
            }
            self.spawned_now.insert(entity);
            self.touched.push(entity);
            fresh.push((entity, owned));
        }
        // Encoded once every new entity has its id: they may refer to each other.
        for (entity, owned) in fresh {
            let spawn = self.spawn_op(entity, &owned);
            self.ops.push(spawn);
        }
    }

    /// Transfers the game asked for, and world entities following the host.
    fn hand_over(&mut self) {
        let mut transfers = std::mem::take(&mut self.state.transfers);
        if let Some(host) = self.peers.host()
            && host != self.local
        {
            transfers.extend(
                self.ownership
                    .owned_entities()
                    .filter(|(_, owned)| owned.flags.host_owned)
                    .map(|(entity, _)| (entity, host)),
            );
        }
        for (entity, to) in transfers {
            let Some(owned) = self.ownership.give_up(entity) else {
                continue;
            };
            // The new owner (and everyone) starts from the values this peer holds now, on the
            // reliable channel, not from the last mutations that happened to arrive: this
            // tick's changes would otherwise never be sent, and lost ones never resent.
            if let UpdateOp::Spawn(current) = self.spawn_op(entity, &owned) {
                self.ops.push(UpdateOp::Insert {
                    wire: owned.wire,
                    components: current.components,
                });
            }
            self.ops.push(UpdateOp::HandOver {
                wire: owned.wire,
                to,
            });
            if let Ok(mut target) = self.world.get_entity_mut(entity) {
                target.insert(crate::replication::remote_owner(self.peers, to));
            }
            self.ownership
                .await_hand_over(entity, self.local, to, &owned);
            self.handed_now.push(HandedOver { entity, owned, to });
        }
    }

    /// Entities owned here that went away, and components removed from the others.
    fn despawns_and_removals(&mut self, changes: LocalChanges) {
        for wire in changes.despawned {
            self.ops.push(UpdateOp::Despawn { wire });
        }
        for Abandoned { net_id, flags } in changes.abandoned {
            let wire = self.ownership.next_wire();
            self.ops.push(UpdateOp::Spawn(Spawn {
                wire,
                net_id,
                flags,
                components: Vec::new(),
            }));
            self.ops.push(UpdateOp::Despawn { wire });
        }
        let mut removals: HashMap<Entity, Vec<u16>> = HashMap::default();
        for (entity, component) in changes.removed_components {
            if self.ownership.is_owned(entity) && !self.spawned_now.contains(&entity) {
                removals.entry(entity).or_default().push(component);
            }
        }
        for (entity, components) in removals {
            let wire = self.ownership.owned(entity).expect("checked above").wire;
            self.ops.push(UpdateOp::Remove { wire, components });
            self.touched.push(entity);
        }
    }

    /// Values changed since the last tick: inserted ones (and ones too big for one packet) go
    /// in the update, mutated ones in mutation messages.
    fn collect_values(&mut self) {
        let since = self.state.since;
        let mut found: Vec<Vec<Change>> = Vec::with_capacity(self.registry.components.len());
        {
            let world: &World = self.world;
            for registration in &mut self.registry.components {
                let mut changes = Vec::new();
                let mut to_net = |e| net_form(world, e);
                registration.erased.collect(
                    world,
                    since,
                    &mut to_net,
                    &mut self.values,
                    &mut changes,
                );
                found.push(changes);
            }
        }
        let max_mutation = self.endpoint.config.max_unreliable_message();
        let mut inserts: HashMap<Entity, Vec<ComponentValue>> = HashMap::default();
        for (index, changes) in found.iter().enumerate() {
            let component = index as u16;
            for change in changes {
                let Some(owned) = self.ownership.owned(change.entity) else {
                    continue;
                };
                if self.spawned_now.contains(&change.entity) {
                    continue;
                }
                let range = change.start..change.end;
                let too_big = range.len() + 16 > max_mutation;
                if change.added || too_big {
                    // Too big for one packet: the reliable channel carries it whole.
                    inserts
                        .entry(change.entity)
                        .or_default()
                        .push(ComponentValue {
                            component,
                            bytes: Bytes::copy_from_slice(&self.values[range]),
                        });
                } else {
                    self.changed.push(ChangedValue {
                        component,
                        entity: change.entity,
                        wire: owned.wire,
                        range,
                    });
                }
            }
        }
        for (entity, components) in inserts {
            let wire = self.ownership.owned(entity).expect("checked above").wire;
            self.ops.push(UpdateOp::Insert { wire, components });
            self.touched.push(entity);
        }
    }

    /// The update message, to every peer that is not about to get a snapshot.
    fn send_updates(&mut self) {
        for entity in &self.touched {
            if let Some(owned) = self.ownership.owned_mut(*entity) {
                owned.struct_tick = self.tick;
            }
        }
        // Peers shown less than everything, or shown or hidden entities this tick, get their own.
        let tailored = self.tailored_updates();
        if self.ops.is_empty() && tailored.is_empty() {
            return;
        }
        let max_size = self.endpoint.config.max_message_size;
        let messages = encode_updates(self.tick, self.ops.iter(), max_size);
        let receivers: Vec<PeerId> = self
            .state
            .peers
            .iter()
            .filter(|(_, stream)| !stream.needs_snapshot)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in receivers {
            let sent = tailored.get(&peer).unwrap_or(&messages);
            for message in sent {
                let _ =
                    self.endpoint
                        .send(peer, Channel::Reliable, KIND_UPDATE, message.clone(), None);
            }
            let sent = sent.clone();
            self.charge_reliable(peer, &sent);
        }
    }

    fn spawn_op(&self, entity: Entity, owned: &Owned) -> UpdateOp {
        UpdateOp::Spawn(Spawn {
            wire: owned.wire,
            net_id: owned.net_id,
            flags: owned.flags,
            components: components_of(self.world, self.registry, entity),
        })
    }

    /// Each peer's mutations: what changed, and what it has not acknowledged.
    fn send_mutations(&mut self) {
        self.changed.sort_by_key(|value| value.component);
        let changed_keys: HashSet<ValueKey> = self
            .changed
            .iter()
            .map(|value| (value.entity, value.component))
            .collect();
        let mut mutations = MutationTick {
            world: self.world,
            registry: self.registry,
            ownership: self.ownership,
            endpoint: self.endpoint,
            now: self.now,
            tick: self.tick,
            tick_period: self.tick_period,
            changed: &self.changed,
            changed_keys: &changed_keys,
            values: &self.values,
            next_token: &mut self.state.next_token,
            budget: self.budget,
            deltas: self.deltas,
        };
        let interest = &self.state.interest;
        for (peer, stream) in &mut self.state.peers {
            // A snapshot sent this tick already holds every current value.
            if stream.snapshot_tick != self.tick {
                mutations.send_to(*peer, stream, interest.view(*peer));
            }
        }
    }
}

/// Maps local entities to the `Entity` form of their net id, for mapped components.
fn net_form(world: &World, entity: Entity) -> Entity {
    super::net_ids::entity_to_net(world, entity)
}
