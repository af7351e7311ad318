//! Messages with `Entity` fields: the sender's entities travel as their room-wide net ids and
//! arrive as the receiver's entities, exactly as entity references inside replicated components
//! do. The translation itself belongs to replication (it owns the net ids); the plugin hands it
//! to this layer as an [`EntityTranslation`], so messages and replication stay independent.

use std::any::type_name;

use bevy::ecs::entity::{EntityMapper, MapEntities};
use bevy::prelude::*;
use bytes::Bytes;

use super::{FromPeer, PeerMessage, PeerOutbox};
use crate::error::InputError;
use crate::net::{KindQueues, reject_input};
use crate::peer::PeerId;
use crate::wire::{decode_serde, encode_serde};

/// Most bytes one entity reference can grow by on the way out: a local entity's bits may take
/// one byte, a net id's up to ten (varints).
pub(super) const GROWTH_PER_ENTITY: usize = 9;

/// How entities cross the network, provided by replication.
#[derive(Resource, Clone, Copy)]
pub(crate) struct EntityTranslation {
    /// A local entity to the `Entity` form of its net id (given one now if it is replicated
    /// from here and not sent yet); `Entity::PLACEHOLDER` when it is not replicated.
    pub(crate) to_net: fn(&mut World, Entity) -> Entity,
    /// The `Entity` form of a net id sent by a peer to the local entity; an id not received yet
    /// gets an empty entity that its spawn fills (bounded per peer), or `Entity::PLACEHOLDER`.
    pub(crate) to_local: fn(&mut World, PeerId, Entity) -> Entity,
}

/// What a mapped message type needs beyond serde.
pub(super) struct MappedHooks<M> {
    /// Calls `each` on every entity field, replacing it with what `each` returns.
    pub(super) map: fn(&mut M, &mut dyn FnMut(Entity) -> Entity),
}

impl<M> Clone for MappedHooks<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for MappedHooks<M> {}

struct FnMapper<'a>(&'a mut dyn FnMut(Entity) -> Entity);

impl EntityMapper for FnMapper<'_> {
    fn get_mapped(&mut self, source: Entity) -> Entity {
        (self.0)(source)
    }

    fn set_mapped(&mut self, _source: Entity, _target: Entity) {}
}

impl<M: MapEntities> MappedHooks<M> {
    pub(super) fn new() -> Self {
        Self {
            map: |message, each| message.map_entities(&mut FnMapper(each)),
        }
    }
}

impl<M> MappedHooks<M> {
    /// How many entity fields `message` has.
    pub(super) fn count(&self, message: &mut M) -> usize {
        let mut count = 0;
        (self.map)(message, &mut |entity| {
            count += 1;
            entity
        });
        count
    }
}

/// `PostUpdate`, before the outbox is sent: rewrites the queued messages' entities to net ids.
pub(super) fn translate_outgoing<M: PeerMessage>(world: &mut World) {
    let Some(translation) = world.get_resource::<EntityTranslation>().copied() else {
        return;
    };
    world.resource_scope(|world, mut outbox: Mut<PeerOutbox<M>>| {
        let Some(hooks) = outbox.mapped else {
            return;
        };
        let translate = |world: &mut World, body: &Bytes| -> Bytes {
            // Our own encoding of a value of this type: it decodes.
            let Ok(mut message) = decode_serde::<M>(body) else {
                return body.clone();
            };
            (hooks.map)(&mut message, &mut |entity| {
                (translation.to_net)(world, entity)
            });
            encode_serde(&message).map_or_else(|_| body.clone(), Bytes::from)
        };
        let outbox = &mut *outbox;
        for (_, out) in &mut outbox.pending {
            out.body = translate(world, &out.body);
        }
        for out in &mut outbox.to_host {
            out.body = translate(world, &out.body);
        }
    });
}

/// `PreUpdate`: decodes the messages of a mapped type and turns their net ids into this world's
/// entities.
pub(super) fn receive_mapped<M: PeerMessage>(world: &mut World) {
    let (kind, hooks) = {
        let outbox = world.resource::<PeerOutbox<M>>();
        (outbox.kind, outbox.mapped)
    };
    let Some(hooks) = hooks else {
        return;
    };
    let translation = world.get_resource::<EntityTranslation>().copied();
    let received = world.resource_mut::<KindQueues>().take(kind);
    for message in received {
        let sender = message.peer;
        match decode_serde::<M>(&message.body) {
            Ok(mut decoded) => {
                if let Some(ticket) = message.ticket {
                    let local = world.resource::<crate::net::ConnectedPeers>().local_id();
                    world
                        .resource_mut::<super::Deliveries>()
                        .read(sender, ticket, local);
                }
                (hooks.map)(&mut decoded, &mut |entity| match translation {
                    Some(translation) if entity != Entity::PLACEHOLDER => {
                        (translation.to_local)(world, sender, entity)
                    }
                    _ => Entity::PLACEHOLDER,
                });
                world.write_message(FromPeer {
                    peer: sender,
                    message: decoded,
                });
            }
            Err(error) => {
                let error = InputError::Decode {
                    type_name: type_name::<M>(),
                    error,
                };
                reject_input(world, sender, error);
            }
        }
    }
}
