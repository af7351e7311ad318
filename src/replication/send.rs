//! The owner's side: each network tick, collect what changed on the entities owned here, and
//! send updates (reliable) and mutations (unreliable, resent when lost) to every peer.

use std::time::Duration;

use bevy::ecs::change_detection::Tick;
use bevy::ecs::query::QueryState;
use bevy::platform::collections::{HashMap, HashSet};
use bevy::prelude::*;
use bevy::time::Real;
use bytes::Bytes;

use super::registry::{Change, ReplicationRegistry};
use super::wire::{
    FLAG_HAND_TO_HOST, FLAG_HOST_OWNED, KIND_MUTATE, KIND_UPDATE, MutateHeader, UpdateMessage,
    UpdateOp, put_group_header,
};
use super::{HandToHostOnLeave, HostOwned, NetId, Owner, Replicated, ReplicationConfig};
use crate::endpoint::Endpoint;
use crate::plugin::{ConnectedPeers, NetEndpoint};
use crate::session::Delivery;
use crate::transport::memory::SplitMix64;
use crate::wire::varint_len;
use crate::{Channel, PeerId};

/// An entity this peer owns and has announced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owned {
    pub(crate) wire: u32,
    pub(crate) net_id: u64,
    pub(crate) flags: u8,
    /// The last tick whose update message concerned it: mutations of it need that update.
    struct_tick: u32,
}

/// A value sent to a peer and not acknowledged yet.
#[derive(Debug, Clone, Copy)]
struct Unacked {
    tick: u32,
    sent_at: Duration,
}

/// What one peer has been sent.
#[derive(Debug, Default)]
struct Receiver {
    /// Still to be sent every entity (it just connected).
    needs_snapshot: bool,
    snapshot_tick: u32,
    /// The newest value sent of each entity's component, until the peer acknowledges it.
    unacked: HashMap<(Entity, u16), Unacked>,
    /// Mutation messages not yet acknowledged or lost: their tick and contents.
    in_flight: HashMap<u64, (u32, Vec<(Entity, u16)>)>,
}

/// What observers saw between systems. Kept apart from the systems' state, which they take out of
/// the world while they run (and observers can fire then).
#[derive(Resource, Default)]
pub(crate) struct LocalChanges {
    /// Components removed from replicated entities, for the send side.
    removed_components: Vec<(Entity, u16)>,
    /// Replicated entities that went away, for the send side.
    unreplicated: Vec<Entity>,
    /// The same, for the receive side.
    pub(crate) forgotten: Vec<Entity>,
}

impl LocalChanges {
    pub(crate) fn component_removed(&mut self, entity: Entity, component: u16) {
        self.removed_components.push((entity, component));
    }
}

/// Replicated entities with what deciding to announce them needs.
type AnnounceQuery = QueryState<(
    Entity,
    Ref<'static, Owner>,
    Ref<'static, Replicated>,
    Option<&'static NetId>,
    Has<HostOwned>,
    Has<HandToHostOnLeave>,
)>;

/// A mutation to send: component, entity number, entity, encoded value.
type Entry<'b> = (u16, u32, Entity, &'b [u8]);

/// The sending side's state.
#[derive(Resource, Default)]
pub(crate) struct SendState {
    tick: u32,
    accumulator: Duration,
    since: Option<Tick>,
    next_wire: u32,
    next_token: u64,
    rng: Option<SplitMix64>,
    pub(crate) owned: HashMap<Entity, Owned>,
    handovers: Vec<(Entity, PeerId)>,
    receivers: HashMap<PeerId, Receiver>,
    announce_query: Option<AnnounceQuery>,
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

    fn net_id(&mut self, taken: &impl Fn(u64) -> bool) -> u64 {
        let rng = self.rng.as_mut().expect("seeded before the first tick");
        loop {
            let id = rng.next_u64();
            // Net ids travel in `Entity` fields of mapped components: the low half must be a
            // valid entity index (not the two highest values, which Bevy reserves).
            if (id as u32) < u32::MAX - 1 && !taken(id) {
                return id;
            }
        }
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
        .handovers
        .push((entity, peer));
}

/// A replicated entity went away here (despawned, or no longer replicated).
pub(crate) fn on_unreplicated(removed: On<Remove, Replicated>, mut changes: ResMut<LocalChanges>) {
    changes.unreplicated.push(removed.entity);
    changes.forgotten.push(removed.entity);
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
        changes.unreplicated.clear();
        return;
    };
    world.resource_scope(|world, mut state: Mut<SendState>| {
        if !state.due(delta, config.tick_rate) {
            return;
        }
        world.resource_scope(|world, mut registry: Mut<ReplicationRegistry>| {
            world.resource_scope(|world, mut endpoint: Mut<NetEndpoint>| {
                let clock = Clock {
                    now,
                    tick_period: if config.tick_rate > 0.0 {
                        Duration::from_secs_f64(1.0 / config.tick_rate)
                    } else {
                        delta
                    },
                };
                run_tick(
                    &mut state,
                    world,
                    &mut registry,
                    &mut endpoint.0,
                    &peers,
                    local,
                    clock,
                );
            });
        });
    });
}

/// The time inputs of a tick.
#[derive(Debug, Clone, Copy)]
struct Clock {
    now: Duration,
    tick_period: Duration,
}

/// Owned data of an update operation, before encoding.
enum Op {
    Spawn {
        wire: u32,
        net_id: u64,
        flags: u8,
        components: Vec<(u16, Vec<u8>)>,
    },
    Insert {
        wire: u32,
        components: Vec<(u16, Vec<u8>)>,
    },
    Remove {
        wire: u32,
        components: Vec<u16>,
    },
    Despawn {
        wire: u32,
    },
    HandOver {
        wire: u32,
        to: PeerId,
    },
}

impl Op {
    fn as_wire(&self) -> UpdateOp<'_> {
        fn borrow(components: &[(u16, Vec<u8>)]) -> Vec<(u16, &[u8])> {
            components
                .iter()
                .map(|(c, bytes)| (*c, bytes.as_slice()))
                .collect()
        }
        match self {
            Op::Spawn {
                wire,
                net_id,
                flags,
                components,
            } => UpdateOp::Spawn {
                wire: *wire,
                net_id: *net_id,
                flags: *flags,
                components: borrow(components),
            },
            Op::Insert { wire, components } => UpdateOp::Insert {
                wire: *wire,
                components: borrow(components),
            },
            Op::Remove { wire, components } => UpdateOp::Remove {
                wire: *wire,
                components: components.clone(),
            },
            Op::Despawn { wire } => UpdateOp::Despawn { wire: *wire },
            Op::HandOver { wire, to } => UpdateOp::HandOver {
                wire: *wire,
                to: *to,
            },
        }
    }

    fn size_hint(&self) -> usize {
        match self {
            Op::Spawn { components, .. } | Op::Insert { components, .. } => {
                24 + components.iter().map(|(_, b)| b.len() + 6).sum::<usize>()
            }
            Op::Remove { components, .. } => 8 + 3 * components.len(),
            Op::Despawn { .. } => 6,
            Op::HandOver { .. } => 22,
        }
    }
}

/// Maps local entities to the `Entity` form of their net id, for mapped components.
fn net_form(world: &World, entity: Entity) -> Entity {
    world
        .get::<NetId>(entity)
        .and_then(|id| Entity::try_from_bits(id.0))
        .unwrap_or(Entity::PLACEHOLDER)
}

/// Every registered component of an entity, encoded.
fn components_of(
    world: &World,
    registry: &ReplicationRegistry,
    entity: Entity,
) -> Vec<(u16, Vec<u8>)> {
    let mut components = Vec::new();
    for (index, registration) in registry.components.iter().enumerate() {
        let mut bytes = Vec::new();
        let mut to_net = |e| net_form(world, e);
        if registration
            .erased
            .encode(world, entity, &mut to_net, &mut bytes)
        {
            components.push((index as u16, bytes));
        }
    }
    components
}

fn run_tick(
    state: &mut SendState,
    world: &mut World,
    registry: &mut ReplicationRegistry,
    endpoint: &mut Endpoint,
    peers: &ConnectedPeers,
    local: PeerId,
    clock: Clock,
) {
    let Clock { now, tick_period } = clock;
    state.tick += 1;
    let tick = state.tick;
    let this_run = world.change_tick();
    let since = state.since;
    state
        .rng
        .get_or_insert_with(|| SplitMix64::new((local.0 as u64) ^ ((local.0 >> 64) as u64)));

    // Receivers: a new peer needs a snapshot, a gone one is forgotten.
    state.receivers.retain(|peer, _| peers.contains(*peer));
    for peer in peers.ids() {
        state.receivers.entry(peer).or_insert_with(|| Receiver {
            needs_snapshot: true,
            ..Default::default()
        });
    }
    // Acknowledged values need no resend; lost ones are due at once.
    let receivers = &mut state.receivers;
    endpoint.drain_deliveries(|peer, token, delivery| {
        let Some(receiver) = receivers.get_mut(&peer) else {
            return;
        };
        let Some((sent_tick, entries)) = receiver.in_flight.remove(&token) else {
            return;
        };
        for entry in entries {
            if let Some(unacked) = receiver.unacked.get_mut(&entry)
                && unacked.tick == sent_tick
            {
                match delivery {
                    Delivery::Delivered => {
                        receiver.unacked.remove(&entry);
                    }
                    Delivery::Lost => unacked.sent_at = Duration::ZERO,
                }
            }
        }
    });

    let mut ops = Vec::new();
    let mut touched = Vec::new();

    // Entities that became ours: spawned here, or taken over.
    let query = state
        .announce_query
        .get_or_insert_with(|| world.query_filtered::<_, ()>());
    let mut announced = Vec::new();
    for (entity, owner, replicated, net_id, host_owned, hand_over) in query.iter(world) {
        if !owner.is_local() || state.owned.contains_key(&entity) {
            continue;
        }
        let fresh = match since {
            None => true,
            Some(since) => replicated.is_added_after(since) || owner.is_changed_after(since),
        };
        if !fresh {
            continue;
        }
        let flags = if host_owned { FLAG_HOST_OWNED } else { 0 }
            | if hand_over { FLAG_HAND_TO_HOST } else { 0 };
        announced.push((entity, net_id.map(|id| id.0), flags));
    }
    let mut spawned_now = HashSet::new();
    for (entity, net_id, flags) in announced {
        let net_id = match net_id {
            Some(id) => id,
            None => {
                let id =
                    state.net_id(&|id| world.resource::<super::receive::ReceiveState>().knows(id));
                world.entity_mut(entity).insert(NetId(id));
                id
            }
        };
        state.next_wire += 1;
        let wire = state.next_wire;
        state.owned.insert(
            entity,
            Owned {
                wire,
                net_id,
                flags,
                struct_tick: tick,
            },
        );
        spawned_now.insert(entity);
        world
            .resource_mut::<super::receive::ReceiveState>()
            .became_owned(entity, net_id);
        ops.push((
            entity,
            Op::Spawn {
                wire,
                net_id,
                flags,
                components: Vec::new(),
            },
        ));
    }
    for (entity, op) in &mut ops {
        if let Op::Spawn { components, .. } = op {
            *components = components_of(world, registry, *entity);
        }
    }

    // Hand-overs: asked for by the game, or world entities following the host.
    let host = peers.host();
    if host != Some(local)
        && let Some(host) = host
    {
        for (entity, owned) in &state.owned {
            if owned.flags & FLAG_HOST_OWNED != 0 {
                state.handovers.push((*entity, host));
            }
        }
    }
    let mut handed_now = Vec::new();
    for (entity, to) in std::mem::take(&mut state.handovers) {
        let Some(owned) = state.owned.remove(&entity) else {
            continue;
        };
        ops.push((
            entity,
            Op::HandOver {
                wire: owned.wire,
                to,
            },
        ));
        handed_now.push((entity, owned, to));
        if let Ok(mut target) = world.get_entity_mut(entity) {
            target.insert(Owner::Peer(to));
        }
        world
            .resource_mut::<super::receive::ReceiveState>()
            .expect_hand_over(entity, owned.net_id, owned.flags, local, to);
    }

    // Gone entities and removed components.
    let (unreplicated, removed_components) = {
        let mut changes = world.resource_mut::<LocalChanges>();
        (
            std::mem::take(&mut changes.unreplicated),
            std::mem::take(&mut changes.removed_components),
        )
    };
    for entity in unreplicated {
        if let Some(owned) = state.owned.remove(&entity) {
            ops.push((entity, Op::Despawn { wire: owned.wire }));
        }
    }
    let mut removals: HashMap<Entity, Vec<u16>> = HashMap::default();
    for (entity, component) in removed_components {
        if state.owned.contains_key(&entity) && !spawned_now.contains(&entity) {
            removals.entry(entity).or_default().push(component);
        }
    }
    for (entity, components) in removals {
        let wire = state.owned[&entity].wire;
        ops.push((entity, Op::Remove { wire, components }));
    }

    // Values: inserted ones go in the update, mutated ones in mutation messages.
    let mut values = Vec::new();
    let mut changes: Vec<Vec<Change>> = Vec::with_capacity(registry.components.len());
    {
        let world_ref: &World = world;
        for registration in &mut registry.components {
            let mut found = Vec::new();
            let mut to_net = |e| net_form(world_ref, e);
            registration
                .erased
                .collect(world_ref, since, &mut to_net, &mut values, &mut found);
            changes.push(found);
        }
    }
    let max_mutation = endpoint.config.max_unreliable_message();
    let mut inserts: HashMap<Entity, Vec<(u16, Vec<u8>)>> = HashMap::default();
    let mut mutations: Vec<(u16, Entity, u32, usize, usize)> = Vec::new();
    for (index, found) in changes.iter().enumerate() {
        let component = index as u16;
        for change in found {
            let Some(owned) = state.owned.get(&change.entity) else {
                continue;
            };
            if spawned_now.contains(&change.entity) {
                continue;
            }
            let too_big = change.end - change.start + 16 > max_mutation;
            if change.added || too_big {
                // Too big for one packet: the reliable channel carries it whole.
                inserts
                    .entry(change.entity)
                    .or_default()
                    .push((component, values[change.start..change.end].to_vec()));
            } else {
                mutations.push((
                    component,
                    change.entity,
                    owned.wire,
                    change.start,
                    change.end,
                ));
            }
        }
    }
    for (entity, components) in inserts {
        let wire = state.owned[&entity].wire;
        ops.push((entity, Op::Insert { wire, components }));
    }

    // The update message, to every peer that is not about to get a snapshot.
    for (entity, _) in &ops {
        if let Some(owned) = state.owned.get_mut(entity) {
            owned.struct_tick = tick;
        }
        touched.push(*entity);
    }
    if !ops.is_empty() {
        let messages = encode_updates(
            tick,
            ops.iter().map(|(_, op)| op),
            endpoint.config.max_message_size,
        );
        for (peer, receiver) in &state.receivers {
            if receiver.needs_snapshot {
                continue;
            }
            for message in &messages {
                let _ = endpoint.send(*peer, Channel::Reliable, KIND_UPDATE, message.clone(), None);
            }
        }
    }

    // Snapshots for peers that just connected: every entity owned here, as it is now.
    if state.receivers.values().any(|r| r.needs_snapshot) {
        let mut snapshot = Vec::new();
        let mut entities: Vec<(&Entity, &Owned)> = state.owned.iter().collect();
        entities.sort_by_key(|(_, owned)| owned.wire);
        for (entity, owned) in entities {
            snapshot.push(Op::Spawn {
                wire: owned.wire,
                net_id: owned.net_id,
                flags: owned.flags,
                components: components_of(world, registry, *entity),
            });
        }
        // Entities handed over this tick: a newcomer must learn of them and of the hand-over
        // (it may be the new owner itself, e.g. a new host).
        for (entity, owned, to) in &handed_now {
            snapshot.push(Op::Spawn {
                wire: owned.wire,
                net_id: owned.net_id,
                flags: owned.flags,
                components: components_of(world, registry, *entity),
            });
            snapshot.push(Op::HandOver {
                wire: owned.wire,
                to: *to,
            });
        }
        let messages = encode_updates(tick, snapshot.iter(), endpoint.config.max_message_size);
        for (peer, receiver) in &mut state.receivers {
            if !receiver.needs_snapshot {
                continue;
            }
            *receiver = Receiver {
                snapshot_tick: tick,
                ..Default::default()
            };
            for message in &messages {
                let _ = endpoint.send(*peer, Channel::Reliable, KIND_UPDATE, message.clone(), None);
            }
        }
    }

    // Mutations, per peer: what changed, plus the values it has not acknowledged for half a
    // round trip (until acknowledged or superseded). Resending before an ack could arrive
    // costs a little bandwidth for values that stopped changing, and buys convergence within
    // a few round trips whatever the loss.
    mutations.sort_by_key(|(component, ..)| *component);
    let changed: HashSet<(Entity, u16)> = mutations.iter().map(|(c, e, ..)| (*e, *c)).collect();
    let SendState {
        receivers,
        owned,
        next_token,
        ..
    } = state;
    for (peer, receiver) in receivers.iter_mut() {
        if receiver.snapshot_tick == tick {
            continue;
        }
        let rtt = endpoint
            .stats(*peer)
            .and_then(|stats| stats.rtt)
            .unwrap_or(Duration::from_millis(100));
        let interval = (rtt / 2)
            .max(tick_period * 2)
            .max(Duration::from_millis(20));
        let mut entries: Vec<Entry<'_>> = mutations
            .iter()
            .map(|(component, entity, wire, start, end)| {
                (*component, *wire, *entity, &values[*start..*end])
            })
            .collect();
        let mut extra = Vec::new();
        let mut stale = Vec::new();
        for ((entity, component), unacked) in &receiver.unacked {
            if changed.contains(&(*entity, *component))
                || now.saturating_sub(unacked.sent_at) < interval
            {
                continue;
            }
            let (Some(owned), Some(registration)) = (owned.get(entity), registry.get(*component))
            else {
                stale.push((*entity, *component));
                continue;
            };
            let mut bytes = Vec::new();
            let mut to_net = |e| net_form(world, e);
            if registration
                .erased
                .encode(world, *entity, &mut to_net, &mut bytes)
                && bytes.len() + 16 <= max_mutation
            {
                extra.push((*component, owned.wire, *entity, bytes));
            } else {
                stale.push((*entity, *component));
            }
        }
        for entry in stale {
            receiver.unacked.remove(&entry);
        }
        entries.extend(extra.iter().map(|(c, w, e, b)| (*c, *w, *e, b.as_slice())));
        entries.sort_by_key(|(component, ..)| *component);
        if entries.is_empty() {
            continue;
        }
        let snapshot_tick = receiver.snapshot_tick;
        let needs = |batch: &[Entry<'_>]| {
            batch
                .iter()
                .filter_map(|(_, _, entity, _)| owned.get(entity).map(|o| o.struct_tick))
                .max()
                .unwrap_or(0)
                .max(snapshot_tick)
        };
        for batch in pack_mutations(&entries, max_mutation) {
            let mut message = Vec::with_capacity(max_mutation);
            MutateHeader {
                tick,
                needs: needs(batch),
            }
            .encode(&mut message);
            write_groups(&mut message, batch);
            *next_token += 1;
            let token = *next_token;
            if endpoint
                .send(
                    *peer,
                    Channel::Unreliable,
                    KIND_MUTATE,
                    Bytes::from(message),
                    Some(token),
                )
                .is_ok()
            {
                let sent: Vec<(Entity, u16)> = batch.iter().map(|(c, _, e, _)| (*e, *c)).collect();
                for entry in &sent {
                    receiver
                        .unacked
                        .insert(*entry, Unacked { tick, sent_at: now });
                }
                receiver.in_flight.insert(token, (tick, sent));
            }
        }
    }
    // Values of entities that are no longer ours need no acknowledgement.
    if !touched.is_empty() {
        for receiver in receivers.values_mut() {
            receiver
                .unacked
                .retain(|(entity, _), _| owned.contains_key(entity));
        }
    }
    state.since = Some(this_run);
}

/// Encodes operations into update messages of at most about `max_size / 2` bytes each: a tick
/// with more spawns than one message holds (a big snapshot) is split, in order.
fn encode_updates<'a>(tick: u32, ops: impl Iterator<Item = &'a Op>, max_size: usize) -> Vec<Bytes> {
    let budget = (max_size / 2).max(1024);
    let mut messages = Vec::new();
    let mut batch: Vec<UpdateOp<'a>> = Vec::new();
    let mut size = 0;
    for op in ops {
        let hint = op.size_hint();
        if !batch.is_empty() && size + hint > budget {
            let mut bytes = Vec::with_capacity(size + 8);
            UpdateMessage {
                tick,
                ops: std::mem::take(&mut batch),
            }
            .encode(&mut bytes);
            messages.push(Bytes::from(bytes));
            size = 0;
        }
        size += hint;
        batch.push(op.as_wire());
    }
    if !batch.is_empty() {
        let mut bytes = Vec::with_capacity(size + 8);
        UpdateMessage { tick, ops: batch }.encode(&mut bytes);
        messages.push(Bytes::from(bytes));
    }
    messages
}

/// Splits entries (sorted by component) into batches whose message fits `max` bytes.
fn pack_mutations<'e, 'b>(entries: &'e [Entry<'b>], max: usize) -> Vec<&'e [Entry<'b>]> {
    // Header: two varints of at most 5 bytes.
    const HEADER: usize = 10;
    let mut batches = Vec::new();
    let mut start = 0;
    let mut size = HEADER;
    let mut group: Option<u16> = None;
    for (index, (component, wire, _, bytes)) in entries.iter().enumerate() {
        let group_header = if group == Some(*component) { 0 } else { 3 + 5 };
        let entry = varint_len(u64::from(*wire)) + bytes.len();
        if index > start && size + group_header + entry > max {
            batches.push(&entries[start..index]);
            start = index;
            size = HEADER;
            group = None;
        }
        let group_header = if group == Some(*component) { 0 } else { 3 + 5 };
        size += group_header + entry;
        group = Some(*component);
    }
    if start < entries.len() {
        batches.push(&entries[start..]);
    }
    batches
}

/// Writes entries (sorted by component) as groups.
fn write_groups(out: &mut Vec<u8>, entries: &[Entry<'_>]) {
    let mut index = 0;
    while index < entries.len() {
        let component = entries[index].0;
        let end = entries[index..]
            .iter()
            .position(|entry| entry.0 != component)
            .map_or(entries.len(), |offset| index + offset);
        put_group_header(out, component, (end - index) as u32);
        for (_, wire, _, bytes) in &entries[index..end] {
            crate::wire::put_varint(out, u64::from(*wire));
            out.extend_from_slice(bytes);
        }
        index = end;
    }
}
