//! The receiver's side: apply each owner's updates (whole, in order) and mutations (newest value
//! wins), and decide who owns what when owners hand over or leave.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use bevy::platform::collections::{HashMap, HashSet};
use bevy::prelude::*;
use bevy::time::Real;
use bytes::Bytes;

use super::codec::CodecError;
use super::registry::{ErasedComponent, ReplicationRegistry};
use super::send::SendState;
use super::wire::{
    FLAG_HAND_TO_HOST, FLAG_HOST_OWNED, KIND_MUTATE, KIND_UPDATE, UpdateOp, decode_mutate_header,
    decode_update, read_group_header, read_wire,
};
use super::{HandToHostOnLeave, HostOwned, NetId, Owner, Replicated, ReplicationConfig};
use crate::PeerId;
use crate::plugin::{ConnectedPeers, KindQueues, reject_input};
use crate::session::InputError;
use crate::wire::Reader;

/// A replica: an entity owned by another peer.
#[derive(Debug)]
struct Replica {
    owner: PeerId,
    /// The owner's number for it; `None` while it changes hands.
    wire: Option<u32>,
    flags: u8,
    /// Handed over to this peer, whose spawn is awaited.
    transfer_to: Option<PeerId>,
    /// Its owner left; the host will take it.
    orphaned: bool,
    /// Owner's tick of the newest value applied, per component.
    ticks: Vec<(u16, u32)>,
}

impl Replica {
    fn tick(&self, component: u16) -> u32 {
        self.ticks
            .iter()
            .find(|(c, _)| *c == component)
            .map_or(0, |(_, t)| *t)
    }

    fn set_tick(&mut self, component: u16, tick: u32) {
        match self.ticks.iter_mut().find(|(c, _)| *c == component) {
            Some(entry) => entry.1 = tick,
            None => self.ticks.push((component, tick)),
        }
    }
}

#[derive(Debug, Default)]
struct SenderState {
    entities: HashMap<u32, Entity>,
    update_tick: u32,
    /// Mutation messages waiting for the update they need: (needs, message).
    buffered: VecDeque<(u32, Bytes)>,
}

/// A spawn of an existing entity whose sender may not own it yet (the hand-over or the
/// departure that would allow it has not arrived).
#[derive(Debug)]
struct PendingSpawn {
    sender: PeerId,
    since: Duration,
    tick: u32,
    wire: u32,
    net_id: u64,
    flags: u8,
    components: Vec<(u16, Vec<u8>)>,
}

/// An entity made for a reference to a net id whose spawn has not arrived yet (another owner's
/// entity, or one whose spawn is still on its way), so the reference points at the right
/// entity once it does.
#[derive(Debug)]
struct Reservation {
    entity: Entity,
    /// Whose value referred to it: reservations count against that peer's limit.
    by: PeerId,
    since: Duration,
}

/// The receiving side's state.
#[derive(Resource, Default)]
pub(crate) struct ReceiveState {
    senders: HashMap<PeerId, SenderState>,
    replicas: HashMap<Entity, Replica>,
    /// Every net id known here and its entity; `local_to_net` is its inverse (one net id per
    /// entity), so forgetting an entity does not scan the map.
    net_to_local: HashMap<u64, Entity>,
    local_to_net: HashMap<Entity, u64>,
    reserved: HashMap<u64, Reservation>,
    /// Reservations in the order they were made (so oldest first): expiry looks at the front
    /// only. Entries of reservations already claimed are skipped when reached, and the queue is
    /// rebuilt when they outnumber the live ones.
    reserved_order: VecDeque<(Duration, u64)>,
    reserved_by: HashMap<PeerId, usize>,
    /// Senders told (in the log) that they reached the reservation limit, until they are below
    /// it again: one warning per episode rather than one per value.
    reservations_full: HashSet<PeerId>,
    pending: Vec<PendingSpawn>,
    orphans: HashSet<Entity>,
    known: BTreeSet<PeerId>,
}

impl ReceiveState {
    /// Whether a net id is in use here.
    pub(crate) fn knows(&self, net_id: u64) -> bool {
        self.net_to_local.contains_key(&net_id)
    }

    /// Records that `net_id` is `entity` here, replacing what either was bound to before.
    fn bind(&mut self, net_id: u64, entity: Entity) {
        if let Some(previous) = self.net_to_local.insert(net_id, entity)
            && previous != entity
        {
            self.local_to_net.remove(&previous);
        }
        if let Some(previous) = self.local_to_net.insert(entity, net_id)
            && previous != net_id
        {
            self.net_to_local.remove(&previous);
        }
    }

    fn unbind(&mut self, entity: Entity) {
        if let Some(net_id) = self.local_to_net.remove(&entity) {
            self.net_to_local.remove(&net_id);
        }
    }

    /// The entity `net_id` is bound to, unless that is only a reservation or no longer exists.
    fn claimed(&self, world: &World, net_id: u64) -> Option<Entity> {
        if self.reserved.contains_key(&net_id) {
            return None;
        }
        let entity = *self.net_to_local.get(&net_id)?;
        world.get_entity(entity).is_ok().then_some(entity)
    }

    /// Ends a reservation: its entity is now the spawned one, or given up.
    fn end_reservation(&mut self, net_id: u64) -> Option<Entity> {
        let reservation = self.reserved.remove(&net_id)?;
        if let Some(count) = self.reserved_by.get_mut(&reservation.by) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.reserved_by.remove(&reservation.by);
            }
        }
        self.reservations_full.remove(&reservation.by);
        Some(reservation.entity)
    }

    /// The entity is gone here (despawned or no longer replicated).
    pub(crate) fn forget_local(&mut self, entity: Entity) {
        if let Some(replica) = self.replicas.remove(&entity)
            && let Some(wire) = replica.wire
            && let Some(sender) = self.senders.get_mut(&replica.owner)
        {
            sender.entities.remove(&wire);
        }
        self.unbind(entity);
        self.orphans.remove(&entity);
    }

    /// The entity is owned here now (spawned here or taken over).
    pub(crate) fn became_owned(&mut self, entity: Entity, net_id: u64) {
        if let Some(replica) = self.replicas.remove(&entity)
            && let Some(wire) = replica.wire
            && let Some(sender) = self.senders.get_mut(&replica.owner)
        {
            sender.entities.remove(&wire);
        }
        self.orphans.remove(&entity);
        self.bind(net_id, entity);
    }

    /// This peer handed the entity to `to`: it is a replica awaiting `to`'s spawn.
    pub(crate) fn expect_hand_over(
        &mut self,
        entity: Entity,
        net_id: u64,
        flags: u8,
        from: PeerId,
        to: PeerId,
    ) {
        self.bind(net_id, entity);
        self.replicas.insert(
            entity,
            Replica {
                owner: from,
                wire: None,
                flags,
                transfer_to: Some(to),
                orphaned: false,
                ticks: Vec::new(),
            },
        );
    }
}

/// The receive system: runs in `PreUpdate`, in [`PeersyncSystems::Receive`](crate::PeersyncSystems).
pub(crate) fn receive(world: &mut World) {
    let now = world.resource::<Time<Real>>().elapsed();
    let config = world.resource::<ReplicationConfig>().clone();
    let peers = world.resource::<ConnectedPeers>().clone();
    let (updates, mutations) = {
        let mut queues = world.resource_mut::<KindQueues>();
        (queues.take(KIND_UPDATE), queues.take(KIND_MUTATE))
    };
    let mut rejected = Vec::new();
    world.resource_scope(|world, mut state: Mut<ReceiveState>| {
        world.resource_scope(|world, registry: Mut<ReplicationRegistry>| {
            let mut ctx = Context {
                world,
                registry: &registry,
                state: &mut state,
                peers: &peers,
                config: &config,
                now,
                rejected: &mut rejected,
            };
            let forgotten = std::mem::take(
                &mut ctx
                    .world
                    .resource_mut::<super::send::LocalChanges>()
                    .forgotten,
            );
            for entity in forgotten {
                ctx.state.forget_local(entity);
            }
            ctx.handle_departures();
            for message in updates {
                ctx.apply_update(message.peer, &message.body);
            }
            for message in mutations {
                ctx.mutation(message.peer, message.body);
            }
            ctx.settle_pending();
            ctx.expire_reservations();
            ctx.adopt_orphans();
        });
    });
    for (peer, error) in rejected {
        reject_input(world, peer, error);
    }
}

struct Context<'a> {
    world: &'a mut World,
    registry: &'a ReplicationRegistry,
    state: &'a mut ReceiveState,
    peers: &'a ConnectedPeers,
    config: &'a ReplicationConfig,
    now: Duration,
    rejected: &'a mut Vec<(PeerId, InputError)>,
}

enum Verdict {
    Accept,
    Wait,
    Refuse(String),
}

impl Context<'_> {
    fn reject(&mut self, peer: PeerId, error: InputError) {
        self.rejected.push((peer, error));
    }

    /// Peers that left: their entities are despawned, or wait for the host to take them.
    fn handle_departures(&mut self) {
        let current: BTreeSet<PeerId> = self.peers.ids().collect();
        let gone: Vec<PeerId> = self.state.known.difference(&current).copied().collect();
        self.state.known = current;
        if gone.is_empty() {
            return;
        }
        let host = self.peers.host();
        for peer in &gone {
            self.state.senders.remove(peer);
            self.state.pending.retain(|pending| pending.sender != *peer);
        }
        let affected: Vec<(Entity, u8)> = self
            .state
            .replicas
            .iter()
            .filter(|(_, replica)| match replica.transfer_to {
                Some(to) => gone.contains(&to),
                None => gone.contains(&replica.owner),
            })
            .map(|(entity, replica)| (*entity, replica.flags))
            .collect();
        for (entity, flags) in affected {
            if flags & (FLAG_HOST_OWNED | FLAG_HAND_TO_HOST) != 0 && host.is_some() {
                if let Some(replica) = self.state.replicas.get_mut(&entity) {
                    replica.orphaned = true;
                    replica.transfer_to = None;
                    replica.wire = None;
                }
                self.state.orphans.insert(entity);
            } else {
                self.despawn(entity);
            }
        }
    }

    /// Orphans wait for the host; when that is us, we take them.
    fn adopt_orphans(&mut self) {
        if self.state.orphans.is_empty() || !self.peers.is_host() {
            return;
        }
        for entity in self.state.orphans.drain().collect::<Vec<_>>() {
            self.take_over(entity);
        }
    }

    /// Makes an entity ours: the send side announces it at the next network tick.
    fn take_over(&mut self, entity: Entity) {
        if let Some(replica) = self.state.replicas.remove(&entity)
            && let Some(wire) = replica.wire
            && let Some(sender) = self.state.senders.get_mut(&replica.owner)
        {
            sender.entities.remove(&wire);
        }
        self.state.orphans.remove(&entity);
        if let Ok(mut target) = self.world.get_entity_mut(entity) {
            target.insert(Owner::Local);
        }
    }

    fn despawn(&mut self, entity: Entity) {
        self.state.forget_local(entity);
        if let Ok(target) = self.world.get_entity_mut(entity) {
            target.despawn();
        }
    }

    fn apply_update(&mut self, sender: PeerId, bytes: &[u8]) {
        let message = match decode_update(bytes) {
            Ok(message) => message,
            Err(error) => {
                self.reject(sender, InputError::Malformed(error));
                return;
            }
        };
        let tick = message.tick;
        for op in message.ops {
            match op {
                UpdateOp::Spawn {
                    wire,
                    net_id,
                    flags,
                    components,
                } => {
                    let components = components
                        .into_iter()
                        .map(|(c, b)| (c, b.to_vec()))
                        .collect();
                    self.spawn(PendingSpawn {
                        sender,
                        since: self.now,
                        tick,
                        wire,
                        net_id,
                        flags,
                        components,
                    });
                }
                UpdateOp::Insert { wire, components } => {
                    if let Some(entity) = self.entity_of(sender, wire) {
                        for (component, bytes) in components {
                            self.write(sender, entity, component, tick, bytes);
                        }
                    }
                }
                UpdateOp::Remove { wire, components } => {
                    if let Some(entity) = self.entity_of(sender, wire) {
                        for component in components {
                            if let Some(registration) = self.registry.get(component) {
                                registration.erased.remove(self.world, entity);
                            }
                        }
                    }
                }
                UpdateOp::Despawn { wire } => {
                    if let Some(entity) = self.entity_of(sender, wire) {
                        self.despawn(entity);
                    }
                }
                UpdateOp::HandOver { wire, to } => {
                    let Some(entity) = self.entity_of(sender, wire) else {
                        continue;
                    };
                    if let Some(state) = self.state.senders.get_mut(&sender) {
                        state.entities.remove(&wire);
                    }
                    if let Some(replica) = self.state.replicas.get_mut(&entity) {
                        replica.wire = None;
                        replica.transfer_to = Some(to);
                    }
                    if Some(to) == self.peers.local_id() {
                        self.take_over(entity);
                    }
                }
            }
        }
        let state = self.state.senders.entry(sender).or_default();
        state.update_tick = state.update_tick.max(tick);
        // Mutations that waited for this update.
        let ready: Vec<Bytes> = {
            let update_tick = state.update_tick;
            let mut ready = Vec::new();
            state.buffered.retain(|(needs, message)| {
                if *needs <= update_tick {
                    ready.push(message.clone());
                    false
                } else {
                    true
                }
            });
            ready
        };
        for message in ready {
            self.apply_mutation(sender, &message);
        }
    }

    fn entity_of(&self, sender: PeerId, wire: u32) -> Option<Entity> {
        self.state
            .senders
            .get(&sender)?
            .entities
            .get(&wire)
            .copied()
    }

    /// Whether `spawn` may make its sender the owner of the existing `entity`.
    fn may_claim(&self, spawn: &PendingSpawn, entity: Entity) -> Verdict {
        let sender = spawn.sender;
        let host = self.peers.host();
        let host_role = spawn.flags & (FLAG_HOST_OWNED | FLAG_HAND_TO_HOST) != 0;
        if let Some(replica) = self.state.replicas.get(&entity) {
            if replica.owner == sender && replica.transfer_to.is_none() && replica.wire.is_some() {
                return Verdict::Accept; // the owner announcing it again
            }
            if replica.transfer_to == Some(sender) {
                return Verdict::Accept;
            }
            if replica.orphaned && host == Some(sender) {
                return Verdict::Accept;
            }
            if replica.flags & FLAG_HOST_OWNED != 0 && host == Some(sender) && host_role {
                return Verdict::Accept;
            }
            return if self.peers.contains(replica.owner) || replica.transfer_to.is_some() {
                Verdict::Wait
            } else {
                Verdict::Refuse(format!(
                    "claims entity {:#x}, which it was not given",
                    spawn.net_id
                ))
            };
        }
        // Owned here: only the host may take over an entity that follows the host.
        let flags = self.world.get_entity(entity).map_or(0, |e| {
            (if e.contains::<HostOwned>() {
                FLAG_HOST_OWNED
            } else {
                0
            }) | if e.contains::<HandToHostOnLeave>() {
                FLAG_HAND_TO_HOST
            } else {
                0
            }
        });
        if flags != 0 && host_role {
            if host == Some(sender) {
                return Verdict::Accept;
            }
            return Verdict::Wait;
        }
        Verdict::Refuse(format!(
            "claims entity {:#x}, which is owned by this peer",
            spawn.net_id
        ))
    }

    fn spawn(&mut self, spawn: PendingSpawn) {
        let existing = self.state.claimed(self.world, spawn.net_id);
        let entity = match existing {
            Some(entity) => {
                match self.may_claim(&spawn, entity) {
                    Verdict::Accept => {}
                    Verdict::Wait => {
                        self.state.pending.push(spawn);
                        return;
                    }
                    Verdict::Refuse(reason) => {
                        self.reject(spawn.sender, InputError::Unauthorized(reason));
                        return;
                    }
                }
                // It changes hands: it is no longer ours, nor the previous owner's.
                let mut send = self.world.resource_mut::<SendState>();
                send.owned.remove(&entity);
                self.state.forget_local(entity);
                self.state.bind(spawn.net_id, entity);
                let mut target = self.world.entity_mut(entity);
                target.insert(Owner::Peer(spawn.sender));
                // A spawn is the whole state: components it does not list are gone.
                for (index, registration) in self.registry.components.iter().enumerate() {
                    if !spawn
                        .components
                        .iter()
                        .any(|(c, _)| usize::from(*c) == index)
                    {
                        registration.erased.remove(self.world, entity);
                    }
                }
                entity
            }
            None => {
                // An entity already made for references to it becomes the replica.
                let reserved = self
                    .state
                    .end_reservation(spawn.net_id)
                    .filter(|entity| self.world.get_entity(*entity).is_ok());
                let bundle = (Replicated, Owner::Peer(spawn.sender), NetId(spawn.net_id));
                let mut target = match reserved {
                    Some(entity) => {
                        let mut target = self.world.entity_mut(entity);
                        target.insert(bundle);
                        target
                    }
                    None => self.world.spawn(bundle),
                };
                if spawn.flags & FLAG_HOST_OWNED != 0 {
                    target.insert(HostOwned);
                }
                if spawn.flags & FLAG_HAND_TO_HOST != 0 {
                    target.insert(HandToHostOnLeave);
                }
                let entity = target.id();
                self.state.bind(spawn.net_id, entity);
                entity
            }
        };
        self.state.replicas.insert(
            entity,
            Replica {
                owner: spawn.sender,
                wire: Some(spawn.wire),
                flags: spawn.flags,
                transfer_to: None,
                orphaned: false,
                ticks: Vec::new(),
            },
        );
        self.state
            .senders
            .entry(spawn.sender)
            .or_default()
            .entities
            .insert(spawn.wire, entity);
        for (component, bytes) in &spawn.components {
            self.write(spawn.sender, entity, *component, spawn.tick, bytes);
        }
    }

    /// Decodes a whole value (its bytes are exactly one value) onto an entity.
    fn write(&mut self, sender: PeerId, entity: Entity, component: u16, tick: u32, bytes: &[u8]) {
        let Some(registration) = self.registry.get(component) else {
            self.reject(
                sender,
                InputError::Malformed(crate::WireError::OutOfRange("component index")),
            );
            return;
        };
        let mut input = bytes;
        let result = self.decode_onto(sender, &*registration.erased, entity, &mut input);
        match result {
            Ok(()) if input.is_empty() => {
                if let Some(replica) = self.state.replicas.get_mut(&entity) {
                    replica.set_tick(component, tick);
                }
            }
            Ok(()) => self.reject(
                sender,
                InputError::Decode {
                    type_name: registration.name,
                    error: format!("{} bytes left over", input.len()),
                },
            ),
            Err(error) => self.reject(
                sender,
                InputError::Decode {
                    type_name: registration.name,
                    error: error.0,
                },
            ),
        }
    }

    fn mutation(&mut self, sender: PeerId, message: Bytes) {
        let needs = match decode_mutate_header(&mut Reader::new(&message)) {
            Ok(header) => header.needs,
            Err(error) => {
                self.reject(sender, InputError::Malformed(error));
                return;
            }
        };
        let limit = self.config.mutation_buffer;
        let state = self.state.senders.entry(sender).or_default();
        if state.update_tick < needs {
            state.buffered.push_back((needs, message));
            while state.buffered.len() > limit {
                state.buffered.pop_front();
            }
            return;
        }
        self.apply_mutation(sender, &message);
    }

    fn apply_mutation(&mut self, sender: PeerId, message: &[u8]) {
        if let Err(error) = self.try_apply_mutation(sender, message) {
            self.reject(sender, error);
        }
    }

    fn try_apply_mutation(&mut self, sender: PeerId, message: &[u8]) -> Result<(), InputError> {
        let mut reader = Reader::new(message);
        let header = decode_mutate_header(&mut reader)?;
        while !reader.is_empty() {
            let (component, count) = read_group_header(&mut reader)?;
            let registration = self.registry.get(component).ok_or(InputError::Malformed(
                crate::WireError::OutOfRange("component index"),
            ))?;
            // Each entry takes at least one byte, so the input bounds the loop, not `count`.
            for _ in 0..count {
                let wire = read_wire(&mut reader)?;
                let mut input = reader.rest();
                // Newer than what was applied: record its tick now (one lookup, not two). If the
                // value then fails to decode, the whole message is rejected as malformed.
                let target = self.entity_of(sender, wire).filter(|entity| {
                    self.state.replicas.get_mut(entity).is_some_and(|replica| {
                        let newer = header.tick > replica.tick(component);
                        if newer {
                            replica.set_tick(component, header.tick);
                        }
                        newer
                    })
                });
                let decoded = match target {
                    Some(entity) => {
                        self.decode_onto(sender, &*registration.erased, entity, &mut input)
                    }
                    None => registration.erased.decode_skip(&mut input),
                };
                decoded.map_err(|error| InputError::Decode {
                    type_name: registration.name,
                    error: error.0,
                })?;
                let consumed = reader.remaining() - input.len();
                reader.bytes(consumed)?;
            }
        }
        Ok(())
    }

    /// Decodes a value onto `entity`, translating the entity references in it (the sender's
    /// [`NetId`] bits) to this world's entities. A reference to a net id not seen here yet gets
    /// an empty entity that the spawn, when it arrives, turns into the replica: references
    /// across owners hold even when the referenced entity's spawn comes later (a late joiner
    /// gets each owner's state separately). Past the reservation limit, or for a reference the
    /// sender could not translate, the field becomes [`Entity::PLACEHOLDER`].
    fn decode_onto(
        &mut self,
        sender: PeerId,
        erased: &dyn ErasedComponent,
        entity: Entity,
        input: &mut &[u8],
    ) -> Result<(), CodecError> {
        let start = *input;
        let mut unknown = Vec::new();
        let result = self.decode_mapped(erased, entity, input, &mut unknown);
        if result.is_err() || unknown.is_empty() {
            return result;
        }
        let mut reserved_any = false;
        for net_id in unknown.drain(..) {
            reserved_any |= self.reserve(sender, net_id);
        }
        if !reserved_any {
            return result;
        }
        // Again, now that the references resolve: decoding is deterministic, so this consumes
        // the same bytes. References still unknown (past the limit) stay placeholders.
        *input = start;
        self.decode_mapped(erased, entity, input, &mut unknown)
    }

    /// Decodes a value onto `entity` with its references mapped; the net ids it refers to that
    /// are not known here go to `unknown` (and their fields become placeholders).
    fn decode_mapped(
        &mut self,
        erased: &dyn ErasedComponent,
        entity: Entity,
        input: &mut &[u8],
        unknown: &mut Vec<u64>,
    ) -> Result<(), CodecError> {
        let net_to_local = &self.state.net_to_local;
        let mut to_local = |e: Entity| {
            if e == Entity::PLACEHOLDER {
                return e;
            }
            net_to_local.get(&e.to_bits()).copied().unwrap_or_else(|| {
                unknown.push(e.to_bits());
                Entity::PLACEHOLDER
            })
        };
        erased.decode_into(self.world, entity, &mut to_local, input)
    }

    /// Makes an empty entity stand for `net_id` until its spawn arrives; false when `sender` has
    /// used up its reservations.
    fn reserve(&mut self, sender: PeerId, net_id: u64) -> bool {
        if self.state.net_to_local.contains_key(&net_id) {
            return true; // the same reference twice in one value
        }
        let count = self.state.reserved_by.entry(sender).or_default();
        if *count >= self.config.max_unresolved_references {
            if self.state.reservations_full.insert(sender) {
                tracing::warn!(
                    "{sender} refers to more than {} entities this peer has not received; \
                     further such references become placeholders \
                     (ReplicationConfig::max_unresolved_references)",
                    self.config.max_unresolved_references
                );
            }
            return false;
        }
        *count += 1;
        let entity = self.world.spawn_empty().id();
        self.state.reserved.insert(
            net_id,
            Reservation {
                entity,
                by: sender,
                since: self.now,
            },
        );
        self.state.reserved_order.push_back((self.now, net_id));
        let state = &mut *self.state;
        if state.reserved_order.len() > 2 * state.reserved.len() + 64 {
            let mut live: Vec<(Duration, u64)> = state
                .reserved
                .iter()
                .map(|(net_id, r)| (r.since, *net_id))
                .collect();
            live.sort_unstable();
            state.reserved_order = live.into();
        }
        self.state.bind(net_id, entity);
        true
    }

    /// Reservations whose spawn never came (the entity was despawned before the reference
    /// arrived, or the reference was garbage): their entities go, and references to them
    /// dangle as references to any despawned entity do.
    fn expire_reservations(&mut self) {
        let timeout = self.config.unresolved_reference_timeout;
        while let Some(&(since, net_id)) = self.state.reserved_order.front() {
            if self.now.saturating_sub(since) < timeout {
                break;
            }
            self.state.reserved_order.pop_front();
            // A claimed reservation, or an earlier one for an id reserved again since.
            if self
                .state
                .reserved
                .get(&net_id)
                .is_none_or(|r| r.since != since)
            {
                continue;
            }
            if let Some(entity) = self.state.end_reservation(net_id) {
                self.state.unbind(entity);
                if let Ok(target) = self.world.get_entity_mut(entity) {
                    target.despawn();
                }
            }
        }
    }

    /// Claims that had to wait: taken once allowed, refused when they waited too long.
    fn settle_pending(&mut self) {
        if self.state.pending.is_empty() {
            return;
        }
        for spawn in std::mem::take(&mut self.state.pending) {
            let verdict = match self.state.claimed(self.world, spawn.net_id) {
                Some(entity) => self.may_claim(&spawn, entity),
                None => Verdict::Accept,
            };
            match verdict {
                Verdict::Accept => self.spawn(spawn),
                Verdict::Wait
                    if self.now.saturating_sub(spawn.since) < self.config.handover_timeout =>
                {
                    self.state.pending.push(spawn);
                }
                Verdict::Wait | Verdict::Refuse(_) => {
                    let reason = format!(
                        "claims entity {:#x} without its owner handing it over",
                        spawn.net_id
                    );
                    self.reject(spawn.sender, InputError::Unauthorized(reason));
                }
            }
        }
    }
}
