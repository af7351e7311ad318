//! A snapshot lists every entity its owner shows this peer: what this peer still holds of that
//! owner and the snapshot left out, the owner despawned (or hid) while the two were apart (this
//! peer or the owner lost its connection and came back, its entities kept meanwhile, see
//! [`resume`](super::resume)). Those copies would otherwise stay for good.

use bevy::platform::collections::HashSet;
use bevy::prelude::*;

use super::Apply;
use crate::peer::PeerId;

impl Apply<'_> {
    pub(super) fn snapshot_begins(&mut self, sender: PeerId) {
        self.streams.entry(sender).or_default().snapshot = Some(HashSet::default());
    }

    /// The snapshot being received from `sender`, if one is, lists its entity `wire`. A
    /// snapshot longer than the entities its owner may have here is not one: it prunes nothing.
    pub(super) fn snapshot_lists(&mut self, sender: PeerId, wire: u32) {
        let limit = self.config.max_entities_per_peer;
        let Some(stream) = self.streams.get_mut(&sender) else {
            return;
        };
        if let Some(listed) = stream.snapshot.as_mut() {
            listed.insert(wire);
            if listed.len() > limit {
                stream.snapshot = None;
            }
        }
    }

    /// Drops what `sender` owns here and its snapshot did not list. Entities on their way to
    /// another owner are left to that hand-over.
    pub(super) fn snapshot_ends(&mut self, sender: PeerId) {
        let Some(listed) = self
            .streams
            .get_mut(&sender)
            .and_then(|stream| stream.snapshot.take())
        else {
            return;
        };
        let stale: Vec<(Entity, u32)> = self
            .ownership
            .replicas_of(&[sender])
            .into_iter()
            .filter_map(|(entity, _)| {
                let replica = self.ownership.replica(entity)?;
                let wire = replica.wire?;
                (replica.transfer_to.is_none() && !listed.contains(&wire)).then_some((entity, wire))
            })
            .collect();
        if !stale.is_empty() {
            tracing::debug!(
                "{} entities of {sender} were despawned while we were apart",
                stale.len()
            );
        }
        for (entity, wire) in stale {
            self.forget_baselines(sender, wire);
            self.despawn(entity);
        }
    }
}
