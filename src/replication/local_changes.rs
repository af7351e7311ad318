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
        net_ids.unbind(entity);
    }
}
