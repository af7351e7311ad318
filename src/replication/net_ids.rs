//! The room-wide ids of replicated entities, and which local entity each one is here.
//!
//! Both directions use the map: the sender gives its new entities ids and translates entity
//! references into ids; the receiver binds the ids it is sent to the entities it makes, and
//! translates references back. A reference to an id whose spawn has not arrived yet gets a
//! *reservation*: an empty entity that the spawn, when it comes, turns into the replica, so the
//! reference already points at the right entity.

use std::collections::VecDeque;
use std::time::Duration;

use bevy::platform::collections::{HashMap, HashSet};
use bevy::prelude::*;

use crate::peer::PeerId;
use crate::rng::Unpredictable;

/// An empty entity standing for a net id whose spawn has not arrived.
#[derive(Debug)]
struct Reservation {
    entity: Entity,
    /// Whose value referred to it: reservations count against that peer's limit.
    by: PeerId,
    since: Duration,
}

/// Every net id known here and its entity.
#[derive(Resource, Debug, Default)]
pub(crate) struct NetIds {
    net_to_local: HashMap<u64, Entity>,
    /// The inverse (one net id per entity), so forgetting an entity does not scan the map.
    local_to_net: HashMap<Entity, u64>,
    reserved: HashMap<u64, Reservation>,
    /// Reservations in the order they were made (so oldest first): expiry looks at the front
    /// only. Entries of reservations already claimed are skipped when reached, and the queue is
    /// rebuilt when they outnumber the live ones.
    reserved_order: VecDeque<(Duration, u64)>,
    reserved_by: HashMap<PeerId, usize>,
    /// Peers told (in the log) that they reached the reservation limit, until they are below it
    /// again: one warning per episode rather than one per value.
    reservations_full: HashSet<PeerId>,
    /// Where new ids come from: the operating system's random source, so no other peer can
    /// tell which ids this one will use next (and claim them first).
    rng: Unpredictable,
}

impl NetIds {
    /// A fresh id for an entity spawned here: unused here, and valid as the bits of an
    /// [`Entity`] (references travel in `Entity` fields, whose low half Bevy checks).
    pub(crate) fn allocate(&mut self) -> u64 {
        loop {
            let id = self.rng.next_u64();
            if (id as u32) < u32::MAX - 1 && !self.net_to_local.contains_key(&id) {
                return id;
            }
        }
    }

    /// The entity `net_id` stands for here, a reservation included.
    pub(crate) fn entity(&self, net_id: u64) -> Option<Entity> {
        self.net_to_local.get(&net_id).copied()
    }

    /// The entity `net_id` is bound to, unless that is only a reservation.
    pub(crate) fn bound(&self, net_id: u64) -> Option<Entity> {
        if self.reserved.contains_key(&net_id) {
            return None;
        }
        self.entity(net_id)
    }

    /// The id of `entity`, if it has one here.
    pub(crate) fn net_id_of(&self, entity: Entity) -> Option<u64> {
        self.local_to_net.get(&entity).copied()
    }

    /// Records that `net_id` is `entity` here, replacing what either was bound to before.
    pub(crate) fn bind(&mut self, net_id: u64, entity: Entity) {
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

    /// Forgets the entity's id (it is gone here).
    pub(crate) fn unbind(&mut self, entity: Entity) {
        if let Some(net_id) = self.local_to_net.remove(&entity) {
            self.net_to_local.remove(&net_id);
        }
    }

    /// Makes `make_entity()` stand for `net_id` until its spawn arrives, on behalf of `by`;
    /// `None` when `by` already has `limit` reservations waiting.
    pub(crate) fn reserve(
        &mut self,
        by: PeerId,
        net_id: u64,
        now: Duration,
        limit: usize,
        make_entity: impl FnOnce() -> Entity,
    ) -> Option<Entity> {
        if let Some(entity) = self.entity(net_id) {
            return Some(entity); // the same reference twice in one value
        }
        let count = self.reserved_by.entry(by).or_default();
        if *count >= limit {
            if self.reservations_full.insert(by) {
                tracing::warn!(
                    "{by} refers to more than {limit} entities this peer has not received; \
                     further such references become placeholders \
                     (ReplicationConfig::max_unresolved_references)"
                );
            }
            return None;
        }
        *count += 1;
        let entity = make_entity();
        self.reserved.insert(
            net_id,
            Reservation {
                entity,
                by,
                since: now,
            },
        );
        self.reserved_order.push_back((now, net_id));
        if self.reserved_order.len() > 2 * self.reserved.len() + 64 {
            let mut live: Vec<(Duration, u64)> = self
                .reserved
                .iter()
                .map(|(net_id, r)| (r.since, *net_id))
                .collect();
            live.sort_unstable();
            self.reserved_order = live.into();
        }
        self.bind(net_id, entity);
        Some(entity)
    }

    /// Ends a reservation because its spawn arrived: the entity that stood for the id, which
    /// stays bound to it.
    pub(crate) fn claim_reservation(&mut self, net_id: u64) -> Option<Entity> {
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

    /// Reservations older than `timeout` whose spawn never came (the entity was despawned
    /// before the reference arrived, or the reference was garbage): unbound, and their entities
    /// returned for despawning. References to them dangle as references to any despawned entity
    /// do.
    pub(crate) fn expire(&mut self, now: Duration, timeout: Duration) -> Vec<Entity> {
        let mut expired = Vec::new();
        while let Some(&(since, net_id)) = self.reserved_order.front() {
            if now.saturating_sub(since) < timeout {
                break;
            }
            self.reserved_order.pop_front();
            // A claimed reservation, or an earlier one for an id reserved again since.
            if self.reserved.get(&net_id).is_none_or(|r| r.since != since) {
                continue;
            }
            if let Some(entity) = self.claim_reservation(net_id) {
                self.unbind(entity);
                expired.push(entity);
            }
        }
        expired
    }
}

/// Looks replicated entities up by their [`NetId`](super::NetId) and back, e.g. to turn an id a
/// message carries into this peer's entity. Entities not received yet (or gone) are `None`.
#[derive(bevy::ecs::system::SystemParam)]
pub struct NetEntities<'w> {
    ids: Res<'w, NetIds>,
}

impl NetEntities<'_> {
    /// This peer's entity for `id`.
    pub fn entity(&self, id: super::NetId) -> Option<Entity> {
        self.ids.bound(id.0)
    }

    /// The room-wide id of `entity`, once it has been sent or received.
    pub fn net_id(&self, entity: Entity) -> Option<super::NetId> {
        self.ids.net_id_of(entity).map(super::NetId)
    }
}

/// A local entity as the `Entity` form of its net id (how entity references travel), or
/// `Entity::PLACEHOLDER` when it is not replicated.
pub(crate) fn entity_to_net(world: &World, entity: Entity) -> Entity {
    world
        .get::<super::NetId>(entity)
        .and_then(|id| Entity::try_from_bits(id.0))
        .unwrap_or(Entity::PLACEHOLDER)
}

/// For a message leaving this peer: like [`entity_to_net`], but an entity spawned here this
/// frame, replicated and not sent yet, gets its net id now (the send side announces it under
/// that id), so a message may name an entity in the frame it is spawned.
pub(crate) fn entity_to_net_now(world: &mut World, entity: Entity) -> Entity {
    let net = entity_to_net(world, entity);
    if net != Entity::PLACEHOLDER {
        return net;
    }
    let ours = world.get_entity(entity).is_ok_and(|e| {
        e.contains::<super::Replicated>() && e.get::<super::Owner>().is_none_or(|o| o.is_local())
    });
    if !ours {
        return Entity::PLACEHOLDER;
    }
    let id = world.resource_mut::<NetIds>().allocate();
    world.entity_mut(entity).insert(super::NetId(id));
    world.resource_mut::<NetIds>().bind(id, entity);
    Entity::try_from_bits(id).unwrap_or(Entity::PLACEHOLDER)
}

/// A reference `sender` made (the `Entity` form of a net id) as this world's entity: the one
/// bound to the id, or a reservation that the id's spawn fills when it arrives (at most
/// [`ReplicationConfig::max_unresolved_references`](super::ReplicationConfig) per sender);
/// `Entity::PLACEHOLDER` past that.
pub(crate) fn entity_to_local(world: &mut World, sender: PeerId, net: Entity) -> Entity {
    if net == Entity::PLACEHOLDER {
        return net;
    }
    let now = world.resource::<Time<bevy::time::Real>>().elapsed();
    let limit = world
        .resource::<super::ReplicationConfig>()
        .max_unresolved_references;
    world.resource_scope(|world, mut ids: Mut<NetIds>| {
        ids.reserve(sender, net.to_bits(), now, limit, || {
            world.spawn_empty().id()
        })
        .unwrap_or(Entity::PLACEHOLDER)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(index: u32) -> Entity {
        Entity::from_raw_u32(index).unwrap()
    }

    #[test]
    fn binding_replaces_both_directions() {
        let mut ids = NetIds::default();
        ids.bind(7, entity(1));
        ids.bind(7, entity(2));
        assert_eq!(ids.entity(7), Some(entity(2)));
        ids.unbind(entity(1));
        assert_eq!(ids.entity(7), Some(entity(2)), "entity 1 no longer had it");
        ids.bind(8, entity(2));
        assert_eq!(ids.entity(7), None, "an entity has one id");
        ids.unbind(entity(2));
        assert_eq!(ids.entity(8), None);
    }

    #[test]
    fn reservations_are_bounded_per_peer_and_expire() {
        let mut ids = NetIds::default();
        let mut next = 10;
        let mut make = || {
            next += 1;
            entity(next)
        };
        let (a, b) = (PeerId(1), PeerId(2));
        let second = Duration::from_secs(1);
        assert!(ids.reserve(a, 1, Duration::ZERO, 2, &mut make).is_some());
        assert!(ids.reserve(a, 2, second, 2, &mut make).is_some());
        assert!(
            ids.reserve(a, 3, second, 2, &mut make).is_none(),
            "a is at its limit"
        );
        assert!(
            ids.reserve(b, 3, second, 2, &mut make).is_some(),
            "b is not"
        );
        assert_eq!(ids.bound(1), None, "a reservation is not a spawned entity");
        let claimed = ids.claim_reservation(2).unwrap();
        assert_eq!(ids.bound(2), Some(claimed), "claimed: now a real binding");
        assert!(
            ids.reserve(a, 4, second, 2, &mut make).is_some(),
            "a has room again"
        );
        let expired = ids.expire(Duration::from_millis(4500), Duration::from_secs(4));
        assert_eq!(
            expired.len(),
            1,
            "only the reservation made at 0 s is 4 s old"
        );
        assert_eq!(ids.entity(1), None, "expired: unbound");
        assert!(ids.entity(3).is_some(), "made at 1 s: still waiting");
    }

    #[test]
    fn allocated_ids_are_valid_entity_bits_and_unused() {
        let mut ids = NetIds::default();
        for _ in 0..1000 {
            let id = ids.allocate();
            assert!(Entity::try_from_bits(id).is_some());
            assert_eq!(ids.entity(id), None);
            ids.bind(id, entity(id as u32 % 1000));
        }
    }
}
