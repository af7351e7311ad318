//! What a peer's view changes in what it is sent: its own update messages and snapshot when
//! they differ from everyone's.

use bevy::platform::collections::{HashMap, HashSet};
use bytes::Bytes;

use super::super::Tick;
use super::super::updates::encode_updates;
use super::PeerView;
use crate::peer::PeerId;
use crate::replication::wire::{Spawn, UpdateOp};

/// The wire number an operation is about.
fn op_wire(op: &UpdateOp) -> u32 {
    match op {
        UpdateOp::Spawn(spawn) => spawn.wire,
        UpdateOp::Insert { wire, .. }
        | UpdateOp::Remove { wire, .. }
        | UpdateOp::Despawn { wire }
        | UpdateOp::HandOver { wire, .. } => *wire,
    }
}

impl Tick<'_> {
    /// This tick's update messages for each peer to whom they differ from everyone's: the
    /// operations on entities hidden from it left out, plus its spawns and despawns.
    pub(in crate::replication::send) fn tailored_updates(&self) -> HashMap<PeerId, Vec<Bytes>> {
        let interest = &self.state.interest;
        let mut tailored = HashMap::default();
        if !interest.active {
            return tailored;
        }
        let max_size = self.endpoint.config.max_message_size;
        for (peer, view) in &interest.views {
            if view.fresh {
                continue;
            }
            let same = view.reveal.is_empty()
                && view.conceal.is_empty()
                && self
                    .ops
                    .iter()
                    .all(|op| !view.hidden.contains(&op_wire(op)));
            if same {
                continue;
            }
            let ops = self.ops_for(*peer, view);
            tailored.insert(*peer, encode_updates(self.tick, ops.iter(), max_size));
        }
        tailored
    }

    fn ops_for(&self, peer: PeerId, view: &PeerView) -> Vec<UpdateOp> {
        let mut ops = Vec::with_capacity(self.ops.len() + view.reveal.len() + view.conceal.len());
        for op in &self.ops {
            let wire = op_wire(op);
            if view.revealed_now.contains(&wire) {
                continue; // its spawn, below, holds all of it
            }
            if !view.hidden.contains(&wire) {
                ops.push(op.clone());
                continue;
            }
            match op {
                // It became ours and the peer may hold it under its previous owner: it takes
                // the entity over there (without its values) and drops it.
                UpdateOp::Spawn(spawn) if self.state.interest.adopted_now.contains(&wire) => {
                    ops.push(UpdateOp::Spawn(Spawn {
                        wire,
                        net_id: spawn.net_id,
                        flags: spawn.flags,
                        components: Vec::new(),
                    }));
                    ops.push(UpdateOp::Despawn { wire });
                }
                // Handed to this very peer: it is shown the entity, as it is now, first.
                UpdateOp::HandOver { to, .. } if *to == peer => {
                    if let Some(handed) = self.handed_now.iter().find(|h| h.owned.wire == wire) {
                        ops.push(self.spawn_op(handed.entity, &handed.owned));
                    }
                    ops.push(op.clone());
                }
                _ => {}
            }
        }
        for entity in &view.reveal {
            if let Some(owned) = self.ownership.owned(*entity) {
                ops.push(self.spawn_op(*entity, owned));
            }
        }
        ops.extend(
            view.conceal
                .iter()
                .map(|wire| UpdateOp::Despawn { wire: *wire }),
        );
        ops
    }

    /// The snapshot of each newcomer to whom it differs from everyone's: only what it is shown;
    /// entities handed over this tick only if handed to it (the others learn of them from their
    /// new owner); for a peer that resumed, despawns of what it is not shown.
    pub(in crate::replication::send) fn tailored_snapshots(
        &self,
        snapshot: &[UpdateOp],
    ) -> HashMap<PeerId, Vec<UpdateOp>> {
        let interest = &self.state.interest;
        let mut tailored = HashMap::default();
        if !interest.active {
            return tailored;
        }
        for (peer, view) in interest.views.iter().filter(|(_, view)| view.fresh) {
            let handed_elsewhere: HashSet<u32> = self
                .handed_now
                .iter()
                .filter(|handed| handed.to != *peer)
                .map(|handed| handed.owned.wire)
                .collect();
            if view.hidden.is_empty() && handed_elsewhere.is_empty() {
                continue;
            }
            let mut ops: Vec<UpdateOp> = snapshot
                .iter()
                .filter(|op| {
                    let wire = op_wire(op);
                    !view.hidden.contains(&wire) && !handed_elsewhere.contains(&wire)
                })
                .cloned()
                .collect();
            if view.resumed {
                ops.extend(
                    view.hidden
                        .iter()
                        .map(|wire| UpdateOp::Despawn { wire: *wire }),
                );
            }
            tailored.insert(*peer, ops);
        }
        tailored
    }
}
