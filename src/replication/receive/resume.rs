//! Entities of players that lost their connection: kept and marked [`Suspended`] until the
//! player comes back under a new id (they are its own again) or its grace runs out (despawned).
//! Which players may come back is decided in the net layer (`ConnectedPeers::is_suspended`,
//! from the goodbye or its absence); this is what it means for their entities.

use bevy::prelude::*;

use super::Apply;
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
                    target.insert(Owner::Peer(peer));
                }
            }
            // Entities on their way to the player when it dropped: it claims them under its new
            // id (it took them over before) or is told again by their giver (it had not).
            for transfer in self.ownership.rekey_transfers(previous, peer) {
                if let Ok(mut target) = self.world.get_entity_mut(transfer.entity) {
                    target.remove::<Suspended>();
                    if transfer.given_as.is_some() {
                        target.insert(Owner::Peer(peer));
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
            for (entity, _) in self.ownership.replicas_of(&[previous]) {
                self.despawn(entity);
            }
            self.ownership.forget_owner(previous);
        }
    }
}
