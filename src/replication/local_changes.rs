//! What the game did to replicated entities that change detection cannot show: components
//! removed and entities gone. Observers fill it as it happens; [`forget_gone`] settles the gone
//! entities every frame, and the send side turns the rest into update operations once per
//! network tick.

use bevy::prelude::*;

use super::Replicated;
use super::net_ids::NetIds;
use super::ownership::Ownership;

/// The inbox.
#[derive(Resource, Default)]
pub(crate) struct LocalChanges {
    /// A replicated component was removed from an entity: (entity, registration index).
    pub(crate) removed_components: Vec<(Entity, u16)>,
    /// Replicated entities that went away (despawned, or `Replicated` removed).
    pub(crate) gone: Vec<Entity>,
    /// Wire numbers of entities owned here that went away: despawns for the next update.
    pub(crate) despawned: Vec<u32>,
    /// Entities taken over here that went away before they were announced: the peers know
    /// them under their old owner, so they are announced and despawned in one update.
    pub(crate) abandoned: Vec<Abandoned>,
}

/// An adopted entity despawned before its announcement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Abandoned {
    pub(crate) net_id: u64,
    pub(crate) flags: super::wire::SpawnFlags,
}

impl LocalChanges {
    pub(crate) fn component_removed(&mut self, entity: Entity, component: u16) {
        self.removed_components.push((entity, component));
    }
}

/// A replicated entity went away here (despawned, or no longer replicated).
pub(crate) fn on_unreplicated(removed: On<Remove, Replicated>, mut changes: ResMut<LocalChanges>) {
    changes.gone.push(removed.entity);
}

/// Forgets the replicated entities that went away, whoever owned them; those owned here are
/// remembered for the next update message (their despawn). Runs before the receive and send
/// systems, so neither ever looks up an entity the game has despawned.
pub(crate) fn forget_gone(
    mut changes: ResMut<LocalChanges>,
    mut ownership: ResMut<Ownership>,
    mut net_ids: ResMut<NetIds>,
) {
    let changes = &mut *changes;
    for entity in changes.gone.drain(..) {
        if let Some(owned) = ownership.forget(entity) {
            changes.despawned.push(owned.wire);
        }
        if let Some(flags) = ownership.take_adopted(entity)
            && let Some(net_id) = net_ids.net_id_of(entity)
        {
            changes.abandoned.push(Abandoned { net_id, flags });
        }
        net_ids.unbind(entity);
    }
}
