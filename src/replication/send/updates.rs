//! Structural changes as update messages: one per tick, split when a tick holds more than one
//! message should (a big snapshot).

use bevy::prelude::*;
use bytes::Bytes;

use super::super::ownership::{Owned, Ownership};
use super::super::registry::ReplicationRegistry;
use super::super::wire::{ComponentValue, KIND_UPDATE, SnapshotMarks, UpdateMessage, UpdateOp};
use super::{HandedOver, Tick, net_form};
use crate::channel::Channel;
use crate::peer::PeerId;

/// Encodes operations into update messages of at most about `max_size / 2` bytes each, in
/// order.
pub(super) fn encode_updates<'a>(
    tick: u32,
    ops: impl Iterator<Item = &'a UpdateOp>,
    max_size: usize,
) -> Vec<Bytes> {
    batches(tick, ops, max_size)
        .iter()
        .map(|(message, size)| encode(message, *size))
        .collect()
}

/// Encodes a snapshot (every entity shown to a peer) like [`encode_updates`], its first and
/// last messages marked: at least one message, even with no entity, so that the peer drops
/// whatever it still holds of this owner.
pub(super) fn encode_snapshot<'a>(
    tick: u32,
    ops: impl Iterator<Item = &'a UpdateOp>,
    max_size: usize,
) -> Vec<Bytes> {
    let mut batches = batches(tick, ops, max_size);
    if batches.is_empty() {
        batches.push((
            UpdateMessage {
                tick,
                snapshot: SnapshotMarks::default(),
                ops: Vec::new(),
            },
            0,
        ));
    }
    batches[0].0.snapshot.begins = true;
    let last = batches.len() - 1;
    batches[last].0.snapshot.ends = true;
    batches
        .iter()
        .map(|(message, size)| encode(message, *size))
        .collect()
}

/// Operations split into messages of at most about `max_size / 2` bytes, with their sizes.
fn batches<'a>(
    tick: u32,
    ops: impl Iterator<Item = &'a UpdateOp>,
    max_size: usize,
) -> Vec<(UpdateMessage, usize)> {
    let budget = (max_size / 2).max(1024);
    let mut messages = Vec::new();
    let mut batch = UpdateMessage {
        tick,
        snapshot: SnapshotMarks::default(),
        ops: Vec::new(),
    };
    let mut size = 0;
    for op in ops {
        let hint = op.size_hint();
        if !batch.ops.is_empty() && size + hint > budget {
            let full = UpdateMessage {
                ops: std::mem::take(&mut batch.ops),
                ..batch.clone()
            };
            messages.push((full, size));
            size = 0;
        }
        size += hint;
        batch.ops.push(op.clone());
    }
    if !batch.ops.is_empty() {
        messages.push((batch, size));
    }
    messages
}

fn encode(message: &UpdateMessage, size: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(size + 8);
    message.encode(&mut bytes);
    Bytes::from(bytes)
}

/// Every registered component of an entity, encoded: a spawn's contents.
pub(super) fn components_of(
    world: &World,
    registry: &ReplicationRegistry,
    entity: Entity,
) -> Vec<ComponentValue> {
    let mut components = Vec::new();
    for (index, registration) in registry.components.iter().enumerate() {
        let mut bytes = Vec::new();
        let mut to_net = |e| net_form(world, e);
        if registration
            .erased
            .encode(world, entity, &mut to_net, &mut bytes)
        {
            components.push(ComponentValue {
                component: index as u16,
                bytes: Bytes::from(bytes),
            });
        }
    }
    components
}

impl Tick<'_> {
    /// Peers that just connected get every entity owned here, as it is now, in one snapshot
    /// (see [`SnapshotMarks`]), with the hand-overs to them they have not claimed.
    pub(super) fn send_snapshots(&mut self) {
        if !self
            .state
            .peers
            .values()
            .any(|stream| stream.needs_snapshot)
        {
            return;
        }
        let mut entities: Vec<(Entity, Owned)> = self
            .ownership
            .owned_entities()
            .map(|(entity, owned)| (entity, *owned))
            .collect();
        entities.sort_by_key(|(_, owned)| owned.wire);
        let mut snapshot: Vec<UpdateOp> = entities
            .iter()
            .map(|(entity, owned)| self.spawn_op(*entity, owned))
            .collect();
        // Entities handed over this tick: a newcomer must learn of them and of the hand-over
        // (it may be the new owner itself, e.g. a new host).
        for handed in &self.handed_now {
            snapshot.push(self.spawn_op(handed.entity, &handed.owned));
            snapshot.push(UpdateOp::HandOver {
                wire: handed.owned.wire,
                to: handed.to,
            });
        }
        let max_size = self.endpoint.config.max_message_size;
        let messages = encode_snapshot(self.tick, snapshot.iter(), max_size);
        // Newcomers shown less than everything get their own.
        let tailored = self.tailored_snapshots(&snapshot);
        let newcomers: Vec<PeerId> = self
            .state
            .peers
            .iter_mut()
            .filter(|(_, stream)| stream.needs_snapshot)
            .map(|(peer, stream)| {
                stream.snapshot_sent(self.tick);
                *peer
            })
            .collect();
        for peer in newcomers {
            // Inside the snapshot, so the peer keeps the entities they name.
            let given = given_again(self.ownership, &self.handed_now, peer);
            let sent = match (tailored.get(&peer), given.is_empty()) {
                (None, true) => messages.clone(),
                (ops, _) => {
                    let ops = ops.unwrap_or(&snapshot).iter().chain(&given);
                    encode_snapshot(self.tick, ops, max_size)
                }
            };
            for message in &sent {
                let _ =
                    self.endpoint
                        .send(peer, Channel::Reliable, KIND_UPDATE, message.clone(), None);
            }
            self.charge_reliable(peer, &sent);
        }
    }
}

/// Hand-overs to `peer` it has not claimed, said again now that it connected: it is a player
/// that came back under a new id (the hand-overs were moved to it) and may never have heard
/// them. Only to it: another peer could not tell this from a hand-over to a stranger. A player
/// that did take them over before it dropped ignores them, as it no longer knows our numbers.
fn given_again(ownership: &Ownership, handed_now: &[HandedOver], peer: PeerId) -> Vec<UpdateOp> {
    ownership
        .given_to(peer)
        .into_iter()
        .filter(|wire| !handed_now.iter().any(|handed| handed.owned.wire == *wire))
        .map(|wire| UpdateOp::HandOver { wire, to: peer })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::wire::decode_update;

    #[test]
    fn a_big_tick_is_split_in_order() {
        let ops: Vec<UpdateOp> = (0..100)
            .map(|wire| UpdateOp::Insert {
                wire,
                components: vec![ComponentValue {
                    component: 0,
                    bytes: Bytes::from(vec![1u8; 100]),
                }],
            })
            .collect();
        let messages = encode_updates(5, ops.iter(), 4096);
        assert!(
            messages.len() > 1,
            "100 inserts of 100 bytes do not fit 2 KiB"
        );
        let decoded: Vec<UpdateOp> = messages
            .iter()
            .flat_map(|bytes| decode_update(bytes).unwrap().ops)
            .collect();
        assert_eq!(decoded, ops);
    }
}
