//! Entities of players that lost their connection: kept and marked [`Suspended`] until the
//! player comes back under a new id (they are its own again) or its grace runs out (despawned;
//! what was being handed to it and not claimed goes back to its giver).
//! Which players may come back is decided in the net layer (`ConnectedPeers::is_suspended`,
//! from the goodbye or its absence); this is what it means for their entities.

use bevy::prelude::*;

use super::Apply;
use crate::peer::PeerId;
use crate::replication::{Owner, Suspended};

impl Apply<'_> {
    /// Keeps an entity of a player that may come back.
    pub(super) fn suspend(&mut self, entity: Entity) {
        if let Ok(mut target) = self.world.get_entity_mut(entity) {
            target.insert(Suspended);
        }
    }

    /// Players that came back get their entities back, under their new id; players whose grace
    /// ran out are gone for good. Runs before this frame's updates, so the spawns a resumed
    /// player sends for its entities find them its own.
    pub(super) fn resumes(&mut self) {
        let continuity = &self.peers.continuity;
        for &(previous, peer) in &continuity.resumed {
            for entity in self.ownership.rekey_owner(previous, peer) {
                if let Ok(mut target) = self.world.get_entity_mut(entity) {
                    target.remove::<Suspended>();
                    target.insert(crate::replication::remote_owner(self.peers, peer));
                }
            }
            // Entities on their way to the player when it dropped: it claims them under its new
            // id (it took them over before) or is told again by their giver (it had not).
            for transfer in self.ownership.rekey_transfers(previous, peer) {
                if let Ok(mut target) = self.world.get_entity_mut(transfer.entity) {
                    target.remove::<Suspended>();
                    if transfer.given_as.is_some() {
                        target.insert(crate::replication::remote_owner(self.peers, peer));
                    }
                }
            }
            if previous != peer {
                self.streams.remove(&previous);
            }
        }
        for &previous in &continuity.expired {
            if self.peers.contains(previous) {
                continue; // the same id is connected again (it was this side that rejoined)
            }
            self.give_back(previous);
            for (entity, _) in self.ownership.replicas_of(&[previous]) {
                self.despawn(entity);
            }
            self.ownership.forget_owner(previous);
        }
    }

    /// What was on its way to `gone` when its grace ran out, never claimed, goes back to its
    /// giver, alike on every peer (each sees the grace run out): the giver takes it over again
    /// and announces it, with its latest values; the others wait for that claim. If the giver
    /// is gone too, the entity is a departed owner's: the host takes it if it follows the
    /// host; otherwise it waits for the giver to come back, or is despawned.
    fn give_back(&mut self, gone: PeerId) {
        let host = self.peers.host();
        for (transfer, giver) in self.ownership.unclaimed_by(gone) {
            let entity = transfer.entity;
            if transfer.given_as.is_some() {
                self.take_over(entity);
                self.unsuspend(entity, Owner::Local);
                continue;
            }
            let follows_host = self
                .ownership
                .replica(entity)
                .is_some_and(|replica| replica.flags.follows_host());
            if self.peers.contains(giver) {
                self.ownership.hand_back(entity);
                self.unsuspend(entity, crate::replication::remote_owner(self.peers, giver));
            } else if follows_host && host.is_some() {
                // Its owner until the host claims it stays as it was (the giver is gone).
                self.ownership.orphan(entity);
                if let Ok(mut target) = self.world.get_entity_mut(entity) {
                    target.remove::<Suspended>();
                }
            } else if self.peers.is_suspended(giver) {
                self.ownership.hand_back(entity); // still suspended, now with its giver's
            } else {
                self.despawn(entity);
            }
        }
    }

    fn unsuspend(&mut self, entity: Entity, owner: Owner) {
        if let Ok(mut target) = self.world.get_entity_mut(entity) {
            target.remove::<Suspended>();
            target.insert(owner);
        }
    }
}
