//! Who owns each replicated entity, and the number its owner gives it on the wire.
//!
//! Both directions read and change ownership, so one type holds it and offers verbs: the send
//! side announces entities that became ours and gives entities away; the receive side records
//! replicas, hand-overs and take-overs. Nothing else writes these maps.

mod ticks;
mod wire_map;

use bevy::platform::collections::{HashMap, HashSet};
use bevy::prelude::*;

use self::ticks::Ticks;
pub(crate) use self::wire_map::WireMap;
use super::wire::SpawnFlags;
use crate::peer::PeerId;

/// An entity this peer owns and has announced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owned {
    /// Our number for it on the wire.
    pub(crate) wire: u32,
    pub(crate) net_id: u64,
    pub(crate) flags: SpawnFlags,
    /// The last tick whose update message concerned it: mutations of it need that update.
    pub(crate) struct_tick: u32,
}

/// A replica: an entity owned by another peer.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) owner: PeerId,
    /// The owner's number for it; `None` while it changes hands.
    pub(crate) wire: Option<u32>,
    pub(crate) flags: SpawnFlags,
    /// Handed over to this peer, whose spawn is awaited.
    pub(crate) transfer_to: Option<PeerId>,
    /// Our own number for it, when this peer is the one handing it over: the hand-over can be
    /// said again to the new owner if it comes back under a new id before claiming it.
    pub(crate) given_as: Option<u32>,
    /// Its owner left; the host will take it.
    pub(crate) orphaned: bool,
}

/// A replica as its owner numbers it: the entity, and the owner's tick of the newest value
/// applied, per component. What each value received needs, in one place.
#[derive(Debug)]
struct Numbered {
    entity: Entity,
    ticks: Ticks,
}

/// A replica on its way to a new owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub(crate) entity: Entity,
    /// Our number for it, if this peer is the giver.
    pub(crate) given_as: Option<u32>,
}

/// The ownership table.
#[derive(Resource, Default)]
pub(crate) struct Ownership {
    owned: HashMap<Entity, Owned>,
    last_wire: u32,
    replicas: HashMap<Entity, Replica>,
    /// Each owner's wire numbers for the replicas it owns (a replica has an entry exactly while
    /// its `wire` is set).
    by_owner: HashMap<PeerId, WireMap<Numbered>>,
    /// Replicas whose owner left, waiting for the host to take them.
    orphans: HashSet<Entity>,
    /// Entities taken over here and not announced yet: if the game despawns one before its
    /// announcement, the peers still hold it under its old owner and must be told.
    adopted: HashMap<Entity, SpawnFlags>,
    /// How many replicas each owner has here (its entity limit is checked against this).
    replicas_by: HashMap<PeerId, usize>,
}

impl Ownership {
    // --- Entities owned here ---

    pub(crate) fn owned(&self, entity: Entity) -> Option<&Owned> {
        self.owned.get(&entity)
    }

    pub(crate) fn owned_mut(&mut self, entity: Entity) -> Option<&mut Owned> {
        self.owned.get_mut(&entity)
    }

    pub(crate) fn is_owned(&self, entity: Entity) -> bool {
        self.owned.contains_key(&entity)
    }

    /// Every entity owned here, in no particular order.
    pub(crate) fn owned_entities(&self) -> impl Iterator<Item = (Entity, &Owned)> {
        self.owned.iter().map(|(entity, owned)| (*entity, owned))
    }

    /// The entity is ours from now on (spawned here, or taken over): it gets a fresh wire
    /// number, and whatever replica record it had is dropped.
    pub(crate) fn announce(
        &mut self,
        entity: Entity,
        net_id: u64,
        flags: SpawnFlags,
        tick: u32,
    ) -> Owned {
        self.forget_replica(entity);
        self.last_wire += 1;
        let owned = Owned {
            wire: self.last_wire,
            net_id,
            flags,
            struct_tick: tick,
        };
        self.owned.insert(entity, owned);
        owned
    }

    /// Hands out a wire number for an entity announced and despawned in the same update.
    pub(crate) fn next_wire(&mut self) -> u32 {
        self.last_wire += 1;
        self.last_wire
    }

    /// The replica is ours now (handed to us, or an orphan we took as host); it is announced
    /// at the next network tick.
    pub(crate) fn adopt(&mut self, entity: Entity) {
        if let Some(replica) = self.replicas.get(&entity) {
            self.adopted.insert(entity, replica.flags);
        }
        self.forget_replica(entity);
    }

    /// The flags of an adopted entity not announced yet, which stops being adopted.
    pub(crate) fn take_adopted(&mut self, entity: Entity) -> Option<SpawnFlags> {
        self.adopted.remove(&entity)
    }

    /// The entity is no longer ours (handed over, taken, or gone).
    pub(crate) fn give_up(&mut self, entity: Entity) -> Option<Owned> {
        self.owned.remove(&entity)
    }

    // --- Replicas ---

    pub(crate) fn replica(&self, entity: Entity) -> Option<&Replica> {
        self.replicas.get(&entity)
    }

    /// The replica `owner` numbers `wire`.
    pub(crate) fn entity_of(&self, owner: PeerId, wire: u32) -> Option<Entity> {
        self.by_owner
            .get(&owner)?
            .get(wire)
            .map(|numbered| numbered.entity)
    }

    /// A value of `component` of `tick` from `owner` for its entity `wire`: the entity if the
    /// value is newer than the one applied, its tick then recorded as applied. One lookup per
    /// value received (see "Where the receiver's time goes" in BENCHMARKS.md).
    pub(crate) fn newer(
        &mut self,
        owner: PeerId,
        wire: u32,
        component: u16,
        tick: u32,
    ) -> Option<Entity> {
        let numbered = self.by_owner.get_mut(&owner)?.get_mut(wire)?;
        numbered
            .ticks
            .advance(component, tick)
            .then_some(numbered.entity)
    }

    /// A value of `component` of `tick` was written onto the replica `entity` (a spawn or an
    /// insertion): older values are skipped from now on.
    pub(crate) fn applied(&mut self, entity: Entity, component: u16, tick: u32) {
        let Some(Replica {
            owner,
            wire: Some(wire),
            ..
        }) = self.replicas.get(&entity)
        else {
            return;
        };
        if let Some(numbered) = self
            .by_owner
            .get_mut(owner)
            .and_then(|numbers| numbers.get_mut(*wire))
        {
            numbered.ticks.set(component, tick);
        }
    }

    /// `owner` announced `entity` as its own, numbered `wire`.
    pub(crate) fn add_replica(
        &mut self,
        entity: Entity,
        owner: PeerId,
        wire: u32,
        flags: SpawnFlags,
    ) {
        self.owned.remove(&entity);
        self.forget_replica(entity);
        self.insert_replica(
            entity,
            Replica {
                owner,
                wire: Some(wire),
                flags,
                transfer_to: None,
                given_as: None,
                orphaned: false,
            },
        );
        let numbered = Numbered {
            entity,
            ticks: Ticks::default(),
        };
        self.by_owner
            .entry(owner)
            .or_default()
            .insert(wire, numbered);
    }

    fn insert_replica(&mut self, entity: Entity, replica: Replica) {
        *self.replicas_by.entry(replica.owner).or_default() += 1;
        if let Some(previous) = self.replicas.insert(entity, replica) {
            self.count_out(previous.owner);
        }
    }

    fn count_out(&mut self, owner: PeerId) {
        if let Some(count) = self.replicas_by.get_mut(&owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.replicas_by.remove(&owner);
            }
        }
    }

    /// We handed `entity`, our number `given_as`, to `to`: a replica of ours until `to`
    /// announces it.
    pub(crate) fn await_hand_over(
        &mut self,
        entity: Entity,
        from: PeerId,
        to: PeerId,
        given: &Owned,
    ) {
        self.owned.remove(&entity);
        self.insert_replica(
            entity,
            Replica {
                owner: from,
                wire: None,
                flags: given.flags,
                transfer_to: Some(to),
                given_as: Some(given.wire),
                orphaned: false,
            },
        );
    }

    /// `owner` handed its entity `wire` to `to`; returns the entity.
    pub(crate) fn handed_over(&mut self, owner: PeerId, wire: u32, to: PeerId) -> Option<Entity> {
        let entity = self.by_owner.get_mut(&owner)?.remove(wire)?.entity;
        if let Some(replica) = self.replicas.get_mut(&entity) {
            replica.wire = None;
            replica.transfer_to = Some(to);
        }
        Some(entity)
    }

    /// Replicas whose owner, or the peer they were being handed to, is one of `gone`.
    pub(crate) fn replicas_of(&self, gone: &[PeerId]) -> Vec<(Entity, SpawnFlags)> {
        self.replicas
            .iter()
            .filter(|(_, replica)| match replica.transfer_to {
                Some(to) => gone.contains(&to),
                None => gone.contains(&replica.owner),
            })
            .map(|(entity, replica)| (*entity, replica.flags))
            .collect()
    }

    /// The owner of the replica left: it waits for the host to take it.
    pub(crate) fn orphan(&mut self, entity: Entity) {
        if let Some(replica) = self.replicas.get_mut(&entity) {
            if let Some(wire) = replica.wire.take()
                && let Some(numbers) = self.by_owner.get_mut(&replica.owner)
            {
                numbers.remove(wire);
            }
            replica.orphaned = true;
            replica.transfer_to = None;
            replica.given_as = None;
        }
        self.orphans.insert(entity);
    }

    /// Takes the replicas waiting for a host.
    pub(crate) fn take_orphans(&mut self) -> Vec<Entity> {
        self.orphans.drain().collect()
    }

    pub(crate) fn has_orphans(&self) -> bool {
        !self.orphans.is_empty()
    }

    /// How many replicas `owner` has here.
    pub(crate) fn replica_count(&self, owner: PeerId) -> usize {
        self.replicas_by.get(&owner).copied().unwrap_or(0)
    }

    /// `old` came back as `new` (a player that rejoined under a new id): its replicas are
    /// `new`'s, under the same numbers. Returns them.
    pub(crate) fn rekey_owner(&mut self, old: PeerId, new: PeerId) -> Vec<Entity> {
        let mut moved = Vec::new();
        for (entity, replica) in &mut self.replicas {
            if replica.owner == old && replica.transfer_to.is_none() && !replica.orphaned {
                replica.owner = new;
                moved.push(*entity);
            }
        }
        for _ in &moved {
            self.count_out(old);
            *self.replicas_by.entry(new).or_default() += 1;
        }
        if let Some(mut numbers) = self.by_owner.remove(&old) {
            // Their ticks may start over (a new process with the same identity).
            for numbered in numbers.values_mut() {
                numbered.ticks = Ticks::default();
            }
            let held = self.by_owner.entry(new).or_default();
            for (wire, numbered) in numbers.drain() {
                held.insert(wire, numbered);
            }
        }
        moved
    }

    /// `old` came back as `new`: what was being handed to `old` is being handed to `new` (it
    /// may have taken it over before it lost its connection, and will claim it under its new
    /// id). Returns those entities, with this peer's number for each it is the giver of.
    pub(crate) fn rekey_transfers(&mut self, old: PeerId, new: PeerId) -> Vec<Transfer> {
        let mut moved = Vec::new();
        for (entity, replica) in &mut self.replicas {
            if replica.transfer_to == Some(old) {
                replica.transfer_to = Some(new);
                moved.push(Transfer {
                    entity: *entity,
                    given_as: replica.given_as,
                });
            }
        }
        moved
    }

    /// What was on its way to `gone` and not claimed: each entity with its giver (as this peer
    /// knows it), and our number for it if this peer is the giver.
    pub(crate) fn unclaimed_by(&self, gone: PeerId) -> Vec<(Transfer, PeerId)> {
        self.replicas
            .iter()
            .filter(|(_, replica)| replica.transfer_to == Some(gone))
            .map(|(entity, replica)| {
                let transfer = Transfer {
                    entity: *entity,
                    given_as: replica.given_as,
                };
                (transfer, replica.owner)
            })
            .collect()
    }

    /// The replica on its way to a player that is gone for good goes back to its giver: it
    /// waits for the giver to announce it again, as after a hand-over to the giver.
    pub(crate) fn hand_back(&mut self, entity: Entity) {
        if let Some(replica) = self.replicas.get_mut(&entity) {
            replica.transfer_to = Some(replica.owner);
            replica.given_as = None;
        }
    }

    /// Hand-overs from this peer to `to` that `to` has not claimed yet, by our number.
    pub(crate) fn given_to(&self, to: PeerId) -> Vec<u32> {
        let mut wires: Vec<u32> = self
            .replicas
            .values()
            .filter(|replica| replica.transfer_to == Some(to))
            .filter_map(|replica| replica.given_as)
            .collect();
        wires.sort_unstable();
        wires
    }

    /// Forgets what `owner` numbered: it is gone.
    pub(crate) fn forget_owner(&mut self, owner: PeerId) {
        self.by_owner.remove(&owner);
    }

    /// Drops the replica record of `entity` (it is being taken over here, or is gone).
    pub(crate) fn forget_replica(&mut self, entity: Entity) {
        let Some(replica) = self.replicas.remove(&entity) else {
            self.orphans.remove(&entity);
            return;
        };
        self.count_out(replica.owner);
        if let Some(wire) = replica.wire
            && let Some(numbers) = self.by_owner.get_mut(&replica.owner)
        {
            numbers.remove(wire);
        }
        self.orphans.remove(&entity);
    }

    /// The entity is gone here: forgets it whoever owned it; what it was if it was ours.
    pub(crate) fn forget(&mut self, entity: Entity) -> Option<Owned> {
        self.forget_replica(entity);
        self.owned.remove(&entity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(index: u32) -> Entity {
        Entity::from_raw_u32(index).unwrap()
    }

    #[test]
    fn a_replica_is_found_by_its_owners_number_until_handed_over() {
        let mut table = Ownership::default();
        let (a, b) = (PeerId(1), PeerId(2));
        table.add_replica(entity(1), a, 5, SpawnFlags::default());
        assert_eq!(table.entity_of(a, 5), Some(entity(1)));
        assert_eq!(table.handed_over(a, 5, b), Some(entity(1)));
        assert_eq!(table.entity_of(a, 5), None);
        assert_eq!(table.replica(entity(1)).unwrap().transfer_to, Some(b));
        assert_eq!(table.replicas_of(&[b]).len(), 1, "it waits for b now");
        table.add_replica(entity(1), b, 1, SpawnFlags::default());
        assert_eq!(table.entity_of(b, 1), Some(entity(1)));
    }

    #[test]
    fn a_hand_over_follows_its_new_owner_to_its_new_id() {
        let mut table = Ownership::default();
        let (giver, old, new, other) = (PeerId(1), PeerId(2), PeerId(3), PeerId(4));
        let given = table.announce(entity(1), 9, SpawnFlags::default(), 1);
        table.await_hand_over(entity(1), giver, old, &given);
        table.add_replica(entity(2), other, 5, SpawnFlags::default());
        table.handed_over(other, 5, old);
        assert_eq!(table.given_to(old), vec![given.wire]);
        let mut moved = table.rekey_transfers(old, new);
        moved.sort_by_key(|transfer| transfer.given_as.is_none());
        assert_eq!(
            moved,
            vec![
                Transfer {
                    entity: entity(1),
                    given_as: Some(given.wire)
                },
                Transfer {
                    entity: entity(2),
                    given_as: None
                },
            ]
        );
        assert!(table.given_to(old).is_empty());
        assert_eq!(
            table.given_to(new),
            vec![given.wire],
            "said again to the new id"
        );
        assert_eq!(
            table.replicas_of(&[new]).len(),
            2,
            "both now wait for the new id"
        );
    }

    #[test]
    fn what_a_gone_player_never_claimed_goes_back_to_its_giver() {
        let mut table = Ownership::default();
        let (here, giver, gone) = (PeerId(1), PeerId(2), PeerId(3));
        let given = table.announce(entity(1), 9, SpawnFlags::default(), 1);
        table.await_hand_over(entity(1), here, gone, &given);
        table.add_replica(entity(2), giver, 5, SpawnFlags::default());
        table.handed_over(giver, 5, gone);
        let mut unclaimed = table.unclaimed_by(gone);
        unclaimed.sort_by_key(|(transfer, _)| transfer.given_as.is_none());
        assert_eq!(
            unclaimed,
            vec![
                (
                    Transfer {
                        entity: entity(1),
                        given_as: Some(given.wire)
                    },
                    here
                ),
                (
                    Transfer {
                        entity: entity(2),
                        given_as: None
                    },
                    giver
                ),
            ]
        );
        table.hand_back(entity(2));
        assert_eq!(table.replica(entity(2)).unwrap().transfer_to, Some(giver));
        assert_eq!(
            table.replicas_of(&[giver]).len(),
            1,
            "it waits for the giver's claim now"
        );
    }

    #[test]
    fn announcing_makes_a_replica_ours_with_a_new_number() {
        let mut table = Ownership::default();
        table.add_replica(entity(1), PeerId(1), 5, SpawnFlags::default());
        table.orphan(entity(1));
        assert!(table.has_orphans());
        let first = table.announce(entity(1), 9, SpawnFlags::default(), 3);
        let second = table.announce(entity(2), 10, SpawnFlags::default(), 3);
        assert_ne!(first.wire, second.wire);
        assert!(table.replica(entity(1)).is_none());
        assert!(!table.has_orphans(), "a taken orphan is no longer waiting");
        assert!(table.forget(entity(1)).is_some());
        assert!(!table.is_owned(entity(1)));
    }

    #[test]
    fn newer_values_advance_and_older_ones_do_not() {
        let mut table = Ownership::default();
        let (a, b) = (PeerId(1), PeerId(2));
        table.add_replica(entity(1), a, 5, SpawnFlags::default());
        assert_eq!(table.newer(a, 5, 0, 3), Some(entity(1)));
        assert_eq!(table.newer(a, 5, 0, 3), None, "the same tick again");
        assert_eq!(table.newer(a, 5, 0, 2), None, "an older tick");
        assert_eq!(
            table.newer(a, 5, 1, 1),
            Some(entity(1)),
            "each component has its own tick"
        );
        assert_eq!(table.newer(b, 5, 0, 9), None, "another owner's number 5");
        assert_eq!(table.newer(a, 6, 0, 9), None, "a number not held");
        table.applied(entity(1), 0, 7);
        assert_eq!(
            table.newer(a, 5, 0, 7),
            None,
            "a spawn's value of tick 7 was applied"
        );
        assert_eq!(table.newer(a, 5, 0, 8), Some(entity(1)));
        // A resumed owner's ticks start over, under the same numbers.
        assert_eq!(table.rekey_owner(a, b), vec![entity(1)]);
        assert_eq!(table.newer(b, 5, 0, 1), Some(entity(1)));
        assert_eq!(table.entity_of(a, 5), None);
        table.handed_over(b, 5, a);
        assert_eq!(
            table.newer(b, 5, 0, 9),
            None,
            "being handed over: nobody's value"
        );
    }

    #[test]
    fn hostile_numbers_find_only_their_own_replicas() {
        let mut table = Ownership::default();
        let a = PeerId(1);
        let wires = [1, u32::MAX, 0, 70_000, 70_000 * 3, 2];
        for (index, wire) in wires.into_iter().enumerate() {
            table.add_replica(entity(index as u32 + 1), a, wire, SpawnFlags::default());
        }
        for (index, wire) in wires.into_iter().enumerate() {
            assert_eq!(table.entity_of(a, wire), Some(entity(index as u32 + 1)));
            assert_eq!(table.newer(a, wire, 3, 10), Some(entity(index as u32 + 1)));
        }
        assert_eq!(table.replica_count(a), wires.len());
        assert_eq!(table.entity_of(a, 3), None);
        table.forget(entity(2));
        assert_eq!(
            table.entity_of(a, u32::MAX),
            None,
            "forgotten with its replica"
        );
        table.orphan(entity(4));
        assert_eq!(table.entity_of(a, 70_000), None, "an orphan has no number");
        assert_eq!(table.entity_of(a, 70_000 * 3), Some(entity(5)));
    }
}
