//! The receiver's side: apply each owner's updates (whole, in order) and mutations (newest value
//! wins). Who may own what is decided in [`authority`](super::authority); the ids and owners
//! live in [`NetIds`] and [`Ownership`].

use std::collections::VecDeque;
use std::time::Duration;

use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bevy::time::Real;
use bytes::Bytes;

use self::baselines::ReceivedBaselines;
use super::authority::{self, Authority, Fate, PendingClaim, Verdict};
use super::net_ids::NetIds;
use super::ownership::Ownership;
use super::registry::{ErasedComponent, ReplicationRegistry};
use super::wire::{KIND_MUTATE, KIND_UPDATE, Spawn, UpdateOp, decode_update};
use super::{HandToHostOnLeave, HostOwned, NetId, Owner, Replicated, ReplicationConfig};
use crate::error::InputError;
use crate::net::{ConnectedPeers, KindQueues, reject_input};
use crate::peer::PeerId;
use crate::wire::WireError;

mod baselines;
mod mutations;
mod resume;
mod snapshot;

/// What arrived from one owner so far.
#[derive(Debug, Default)]
struct OwnerStream {
    /// The newest of its update messages applied.
    update_tick: u32,
    /// Mutation messages waiting for the update they need: (needs, message).
    buffered: VecDeque<(u32, Bytes)>,
    /// Its last values of the components it sends as differences.
    baselines: ReceivedBaselines,
    /// Values this frame that could not be read for want of their baseline.
    refused: Vec<RefusedValue>,
    /// The entity numbers of the snapshot being received, if one is.
    snapshot: Option<bevy::platform::collections::HashSet<u32>>,
}

/// A value in an owner's message of `tick` that could not be read for want of its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RefusedValue {
    tick: u32,
    component: u16,
    wire: u32,
}

/// The receiving side's own state.
#[derive(Resource, Default)]
pub(crate) struct ReceiveState {
    streams: HashMap<PeerId, OwnerStream>,
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
        world.resource_scope(|world, mut ownership: Mut<Ownership>| {
            world.resource_scope(|world, mut net_ids: Mut<NetIds>| {
                world.resource_scope(|world, mut authority: Mut<Authority>| {
                    world.resource_scope(|world, registry: Mut<ReplicationRegistry>| {
                        let mut apply = Apply {
                            world,
                            registry: &registry,
                            streams: &mut state.streams,
                            ownership: &mut ownership,
                            net_ids: &mut net_ids,
                            authority: &mut authority,
                            peers: &peers,
                            config: &config,
                            now,
                            rejected: &mut rejected,
                        };
                        apply.departures();
                        for message in updates {
                            apply.update(message.peer, &message.body);
                        }
                        for message in mutations {
                            apply.mutation(message.peer, message.body);
                        }
                        apply.settle_pending();
                        apply.expire_reservations();
                        apply.adopt_orphans();
                    });
                });
            });
        });
    });
    for (peer, error) in rejected {
        reject_input(world, peer, error);
    }
    mutations::send_refusals(world);
}

/// One frame's work on the world.
struct Apply<'a> {
    world: &'a mut World,
    registry: &'a ReplicationRegistry,
    streams: &'a mut HashMap<PeerId, OwnerStream>,
    ownership: &'a mut Ownership,
    net_ids: &'a mut NetIds,
    authority: &'a mut Authority,
    peers: &'a ConnectedPeers,
    config: &'a ReplicationConfig,
    now: Duration,
    rejected: &'a mut Vec<(PeerId, InputError)>,
}

impl Apply<'_> {
    fn reject(&mut self, peer: PeerId, error: InputError) {
        self.rejected.push((peer, error));
    }

    /// Peers that left: their entities are despawned, wait for the host to take them, or wait
    /// for their player to come back (see [`resume`]).
    fn departures(&mut self) {
        let gone = self.authority.departures(self.peers);
        for peer in &gone {
            // A player that came back in the same frame as its old id went (this peer had not
            // dropped the old id yet) resumes too.
            let may_resume = self.peers.is_suspended(*peer) || self.peers.resumed_from(*peer);
            for (entity, fate) in authority::fates(self.ownership, &[*peer], self.peers.host()) {
                match fate {
                    Fate::Orphan => self.ownership.orphan(entity),
                    Fate::Despawn if may_resume => self.suspend(entity),
                    Fate::Despawn => self.despawn(entity),
                }
            }
            self.streams.remove(peer);
            if !may_resume {
                self.ownership.forget_owner(*peer);
            }
        }
        self.resumes();
    }

    /// Orphans wait for the host; when that is us, we take them.
    fn adopt_orphans(&mut self) {
        if !self.ownership.has_orphans() || !self.peers.is_host() {
            return;
        }
        for entity in self.ownership.take_orphans() {
            self.take_over(entity);
        }
    }

    /// Makes an entity ours: the send side announces it at the next network tick.
    fn take_over(&mut self, entity: Entity) {
        self.ownership.adopt(entity);
        if let Ok(mut target) = self.world.get_entity_mut(entity) {
            target.insert(Owner::Local);
        }
    }

    fn despawn(&mut self, entity: Entity) {
        self.ownership.forget(entity);
        self.net_ids.unbind(entity);
        if let Ok(target) = self.world.get_entity_mut(entity) {
            target.despawn();
        }
    }

    fn update(&mut self, sender: PeerId, bytes: &Bytes) {
        let message = match decode_update(bytes) {
            Ok(message) => message,
            Err(error) => {
                self.reject(sender, InputError::Malformed(error));
                return;
            }
        };
        let tick = message.tick;
        if message.snapshot.begins {
            self.snapshot_begins(sender);
        }
        for op in message.ops {
            match op {
                UpdateOp::Spawn(spawn) => {
                    self.snapshot_lists(sender, spawn.wire);
                    self.spawn(PendingClaim {
                        sender,
                        since: self.now,
                        tick,
                        spawn,
                        despawned: false,
                        later: Vec::new(),
                        handed_to: None,
                    });
                }
                UpdateOp::Insert { wire, components } => {
                    if let Some(entity) = self.ownership.entity_of(sender, wire) {
                        for value in components {
                            self.write(sender, entity, value.component, tick, &value.bytes);
                        }
                    } else {
                        // Kept with a waiting claim, if there is one, like a mutation.
                        for value in components {
                            self.authority.later_value(
                                sender,
                                wire,
                                value.component,
                                tick,
                                Some(&value.bytes),
                            );
                        }
                    }
                }
                UpdateOp::Remove { wire, components } => {
                    if let Some(entity) = self.ownership.entity_of(sender, wire) {
                        for component in components {
                            if let Some(registration) = self.registry.get(component) {
                                registration.erased.remove(self.world, entity);
                            }
                        }
                    } else {
                        for component in components {
                            self.authority
                                .later_value(sender, wire, component, tick, None);
                        }
                    }
                }
                UpdateOp::Despawn { wire } => {
                    self.forget_baselines(sender, wire);
                    if let Some(entity) = self.ownership.entity_of(sender, wire) {
                        self.despawn(entity);
                    } else {
                        self.authority.despawned(sender, wire);
                    }
                }
                UpdateOp::HandOver { wire, to } => {
                    self.snapshot_lists(sender, wire);
                    if !self.peers.contains(to) && Some(to) != self.peers.local_id() {
                        // An entity handed to nobody would wait here for a claim forever.
                        let reason = format!("hands entity {wire} to {to}, who is not in the room");
                        self.reject(sender, InputError::Unauthorized(reason));
                        continue;
                    }
                    self.forget_baselines(sender, wire);
                    if self.ownership.entity_of(sender, wire).is_none() {
                        self.authority.handed_on(sender, wire, to);
                    } else {
                        self.hand_over(sender, wire, to);
                    }
                }
            }
        }
        if message.snapshot.ends {
            self.snapshot_ends(sender);
        }
        let stream = self.streams.entry(sender).or_default();
        stream.update_tick = stream.update_tick.max(tick);
        // Mutations that waited for this update.
        let update_tick = stream.update_tick;
        let mut ready = Vec::new();
        stream.buffered.retain(|(needs, message)| {
            let due = *needs <= update_tick;
            if due {
                ready.push(message.clone());
            }
            !due
        });
        for message in ready {
            self.apply_mutation(sender, &message);
        }
    }

    /// `sender` hands its entity `wire` to `to`; if that is us, we take it.
    fn hand_over(&mut self, sender: PeerId, wire: u32, to: PeerId) {
        if let Some(entity) = self.ownership.handed_over(sender, wire, to)
            && Some(to) == self.peers.local_id()
        {
            self.take_over(entity);
        }
    }

    /// The entity a spawn's net id already names here, if it exists.
    fn existing(&self, net_id: u64) -> Option<Entity> {
        self.net_ids
            .bound(net_id)
            .filter(|entity| self.world.get_entity(*entity).is_ok())
    }

    /// Applies a spawn: a new replica, or a claim on an existing entity.
    fn spawn(&mut self, mut claim: PendingClaim) {
        let PendingClaim { sender, tick, .. } = claim;
        if let Some(named) = self.ownership.entity_of(sender, claim.spawn.wire)
            && self.net_ids.net_id_of(named) != Some(claim.spawn.net_id)
        {
            // A wire number names one entity of its owner at a time; reusing it for another
            // would leave the first unreachable (and uncounted).
            let reason = format!("spawns a second entity as its entity {}", claim.spawn.wire);
            return self.reject(sender, InputError::Unauthorized(reason));
        }
        let entity = match self.existing(claim.spawn.net_id) {
            Some(entity) => {
                let verdict = authority::may_claim(
                    self.ownership,
                    self.world,
                    self.peers,
                    sender,
                    &claim.spawn,
                    entity,
                );
                match verdict {
                    Verdict::Accept => self.change_hands(sender, &claim.spawn, entity),
                    Verdict::Wait => {
                        if self.over_entity_limit(sender) {
                            return;
                        }
                        return self.authority.wait(claim);
                    }
                    Verdict::Refuse(reason) => {
                        return self.reject(sender, InputError::Unauthorized(reason));
                    }
                }
            }
            None => {
                if self.over_entity_limit(sender) {
                    return;
                }
                self.new_replica(sender, &claim.spawn)
            }
        };
        for value in &claim.spawn.components {
            self.write(sender, entity, value.component, tick, &value.bytes);
        }
        for value in std::mem::take(&mut claim.later) {
            match &value.bytes {
                Some(bytes) => self.write(sender, entity, value.component, value.tick, bytes),
                None => {
                    if let Some(registration) = self.registry.get(value.component) {
                        registration.erased.remove(self.world, entity);
                    }
                }
            }
        }
        if let Some(to) = claim.handed_to {
            self.hand_over(sender, claim.spawn.wire, to);
        }
    }

    /// An existing entity becomes `sender`'s.
    fn change_hands(&mut self, sender: PeerId, spawn: &Spawn, entity: Entity) -> Entity {
        self.ownership
            .add_replica(entity, sender, spawn.wire, spawn.flags);
        self.net_ids.bind(spawn.net_id, entity);
        let owner = crate::replication::remote_owner(self.peers, sender);
        self.world.entity_mut(entity).insert(owner);
        // A spawn is the whole state: components it does not list are gone.
        for (index, registration) in self.registry.components.iter().enumerate() {
            if !spawn
                .components
                .iter()
                .any(|value| usize::from(value.component) == index)
            {
                registration.erased.remove(self.world, entity);
            }
        }
        entity
    }

    /// A replica for an id not spawned here yet: the entity made for references to it, if any.
    fn new_replica(&mut self, sender: PeerId, spawn: &Spawn) -> Entity {
        let reserved = self
            .net_ids
            .claim_reservation(spawn.net_id)
            .filter(|entity| self.world.get_entity(*entity).is_ok());
        let bundle = (
            Replicated,
            crate::replication::remote_owner(self.peers, sender),
            NetId(spawn.net_id),
        );
        let mut target = match reserved {
            Some(entity) => {
                let mut target = self.world.entity_mut(entity);
                target.insert(bundle);
                target
            }
            None => self.world.spawn(bundle),
        };
        if spawn.flags.host_owned {
            target.insert(HostOwned);
        }
        if spawn.flags.hand_to_host {
            target.insert(HandToHostOnLeave);
        }
        let entity = target.id();
        self.net_ids.bind(spawn.net_id, entity);
        self.ownership
            .add_replica(entity, sender, spawn.wire, spawn.flags);
        entity
    }

    /// Whether `sender` already has as many entities here (held or claimed) as one peer may;
    /// if so, the spawn is dropped and reported.
    fn over_entity_limit(&mut self, sender: PeerId) -> bool {
        let limit = self.config.max_entities_per_peer;
        let held = self.ownership.replica_count(sender) + self.authority.pending_of(sender);
        if held < limit {
            return false;
        }
        let reason =
            format!("owns {held} entities here, the most one peer may (max_entities_per_peer)");
        self.reject(sender, InputError::OverLimit(reason));
        true
    }

    /// Decodes a whole value (its bytes are exactly one value) onto an entity.
    fn write(&mut self, sender: PeerId, entity: Entity, component: u16, tick: u32, bytes: &[u8]) {
        let Some(registration) = self.registry.get(component) else {
            self.reject(
                sender,
                InputError::Malformed(WireError::OutOfRange("component index")),
            );
            return;
        };
        let mut input = bytes;
        let result = self.decode_onto(sender, &*registration.erased, entity, &mut input);
        let error = match result {
            Ok(()) if input.is_empty() => {
                self.ownership.applied(entity, component, tick);
                return;
            }
            Ok(()) => format!("{} bytes left over", input.len()),
            Err(error) => error.0,
        };
        self.reject(
            sender,
            InputError::Decode {
                type_name: registration.name,
                error,
            },
        );
    }

    /// Decodes a value onto `entity`, translating the entity references in it (the sender's
    /// [`NetId`] bits) to this world's entities before it is written. A reference to a net id
    /// not seen here yet gets an empty entity that the spawn, when it arrives, turns into the
    /// replica: references across owners hold even when the referenced entity's spawn comes
    /// later (a late joiner gets each owner's state separately). Past the reservation limit, or
    /// for a reference the sender could not translate, the field becomes
    /// [`Entity::PLACEHOLDER`].
    fn decode_onto(
        &mut self,
        sender: PeerId,
        erased: &dyn ErasedComponent,
        entity: Entity,
        input: &mut &[u8],
    ) -> Result<(), super::codec::CodecError> {
        let (net_ids, now) = (&mut *self.net_ids, self.now);
        let limit = self.config.max_unresolved_references;
        let mut to_local = |world: &mut World, net: Entity| {
            if net == Entity::PLACEHOLDER {
                return net;
            }
            net_ids
                .reserve(sender, net.to_bits(), now, limit, || {
                    world.spawn_empty().id()
                })
                .unwrap_or(Entity::PLACEHOLDER)
        };
        erased.decode_into(self.world, entity, &mut to_local, input)
    }

    /// Reservations whose spawn never came are given up.
    fn expire_reservations(&mut self) {
        let timeout = self.config.unresolved_reference_timeout;
        for entity in self.net_ids.expire(self.now, timeout) {
            if let Ok(target) = self.world.get_entity_mut(entity) {
                target.despawn();
            }
        }
    }

    /// Claims that had to wait: taken once allowed, refused when they waited too long.
    fn settle_pending(&mut self) {
        if !self.authority.has_pending() {
            return;
        }
        for claim in self.authority.take_pending() {
            let existing = self.existing(claim.spawn.net_id);
            let verdict = match existing {
                Some(entity) => authority::may_claim(
                    self.ownership,
                    self.world,
                    self.peers,
                    claim.sender,
                    &claim.spawn,
                    entity,
                ),
                None => Verdict::Accept,
            };
            let follows_host = existing.is_some_and(|entity| {
                authority::follows_host_here(self.ownership, self.world, entity)
            });
            match verdict {
                Verdict::Accept if claim.despawned => {
                    if let Some(entity) = self.existing(claim.spawn.net_id) {
                        self.despawn(entity);
                    }
                }
                Verdict::Accept => self.spawn(claim),
                Verdict::Wait
                    if !authority::expired(
                        &claim,
                        self.now,
                        self.config,
                        self.peers,
                        follows_host,
                    ) =>
                {
                    self.authority.wait(claim);
                }
                Verdict::Wait | Verdict::Refuse(_) => {
                    let reason = format!(
                        "claims entity {:#x} without its owner handing it over",
                        claim.spawn.net_id
                    );
                    self.reject(claim.sender, InputError::Unauthorized(reason));
                }
            }
        }
    }
}
