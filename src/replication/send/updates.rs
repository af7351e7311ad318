//! Structural changes as update messages: one per tick, split when a tick holds more than one
//! message should (a big snapshot).

use bevy::prelude::*;
use bytes::Bytes;

use super::super::ownership::Ownership;
use super::super::registry::ReplicationRegistry;
use super::super::wire::{ComponentValue, UpdateMessage, UpdateOp};
use super::{HandedOver, net_form};
use crate::peer::PeerId;

/// Encodes operations into update messages of at most about `max_size / 2` bytes each, in
/// order.
pub(super) fn encode_updates<'a>(
    tick: u32,
    ops: impl Iterator<Item = &'a UpdateOp>,
    max_size: usize,
) -> Vec<Bytes> {
    let budget = (max_size / 2).max(1024);
    let mut messages = Vec::new();
    let mut batch = UpdateMessage {
        tick,
        ops: Vec::new(),
    };
    let mut size = 0;
    for op in ops {
        let hint = op.size_hint();
        if !batch.ops.is_empty() && size + hint > budget {
            messages.push(encode(&batch, size));
            batch.ops.clear();
            size = 0;
        }
        size += hint;
        batch.ops.push(op.clone());
    }
    if !batch.ops.is_empty() {
        messages.push(encode(&batch, size));
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

/// Hand-overs to `peer` it has not claimed, said again now that it connected: it is a player
/// that came back under a new id (the hand-overs were moved to it) and may never have heard
/// them. Only to it: another peer could not tell this from a hand-over to a stranger. A player
/// that did take them over before it dropped ignores them, as it no longer knows our numbers.
pub(super) fn given_again(
    ownership: &Ownership,
    handed_now: &[HandedOver],
    peer: PeerId,
) -> Vec<UpdateOp> {
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
