//! The registered components, behind one object-safe interface so the replication systems can
//! walk them by index (the index is what travels on the wire).

use std::any::{Any, TypeId, type_name};

use bevy::ecs::change_detection::Tick;
use bevy::ecs::component::Mutable;
use bevy::ecs::entity::{EntityMapper, MapEntities};
use bevy::ecs::query::QueryState;
use bevy::prelude::*;

use super::codec::{CodecError, ComponentCodec, DeltaCodec};
use super::local_changes::LocalChanges;
use super::{Owner, Replicated};
use crate::protocol::ProtocolRegistry;

/// Entity translation for mapped components on the way out: local entities to the `Entity`
/// form of their net ids.
pub(crate) type EntityMap<'a> = &'a mut dyn FnMut(Entity) -> Entity;

/// Entity translation on the way in: the `Entity` form of a net id to the local entity. It gets
/// the world so that it can make an entity for an id not seen yet (a reservation).
pub(crate) type EntityResolver<'a> = &'a mut dyn FnMut(&mut World, Entity) -> Entity;

struct FnMapper<'a>(EntityMap<'a>);

impl EntityMapper for FnMapper<'_> {
    fn get_mapped(&mut self, source: Entity) -> Entity {
        (self.0)(source)
    }

    fn set_mapped(&mut self, _source: Entity, _target: Entity) {}
}

/// Translates the entities inside a value in place.
pub(crate) type MapFn<C> = fn(&mut C, EntityMap<'_>);

/// The [`MapFn`] of a [`MapEntities`] component.
pub(crate) fn mapper<C: MapEntities>() -> MapFn<C> {
    |value, map| value.map_entities(&mut FnMapper(map))
}

/// A value that changed since the last collection, encoded into the collector's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change {
    pub(crate) entity: Entity,
    /// Inserted since the last collection, rather than only mutated.
    pub(crate) added: bool,
    /// Where its bytes are in the buffer.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Takes a received value before it is written to the entity: returns it to have it written,
/// or keeps it (an interpolated component puts it in its buffer instead).
pub(crate) type ReceiveHook<C> = fn(&mut EntityWorldMut<'_>, C) -> Option<C>;

/// What the replication systems can do with one registered component.
pub(crate) trait ErasedComponent: Send + Sync {
    /// The typed registration, to set its [`ReceiveHook`].
    fn as_any_mut(&mut self) -> &mut dyn Any;

    /// Encodes every locally owned value added or changed after `since` (all of them if
    /// `None`) into `out`, recording where each one went.
    fn collect(
        &mut self,
        world: &World,
        since: Option<Tick>,
        to_net: EntityMap<'_>,
        out: &mut Vec<u8>,
        changes: &mut Vec<Change>,
    );

    /// Encodes the entity's value, if it has one.
    fn encode(
        &self,
        world: &World,
        entity: Entity,
        to_net: EntityMap<'_>,
        out: &mut Vec<u8>,
    ) -> bool;

    /// Decodes a value, translates its entity references with `to_local`, and only then writes
    /// it to the entity (inserting or overwriting), so observers and change detection never see
    /// a half-translated value.
    fn decode_into(
        &self,
        world: &mut World,
        entity: Entity,
        to_local: EntityResolver<'_>,
        input: &mut &[u8],
    ) -> Result<(), CodecError>;

    /// Decodes a value and drops it: to skip over values that lost to newer ones.
    fn decode_skip(&self, input: &mut &[u8]) -> Result<(), CodecError>;

    /// Removes the component from the entity.
    fn remove(&self, world: &mut World, entity: Entity);
}

struct Typed<C: Component> {
    codec: Box<dyn ComponentCodec<C>>,
    map: Option<MapFn<C>>,
    query: QueryState<(Entity, Ref<'static, C>, &'static Owner), With<Replicated>>,
    receive_hook: Option<ReceiveHook<C>>,
}

impl<C: Component<Mutability = Mutable>> ErasedComponent for Typed<C> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn collect(
        &mut self,
        world: &World,
        since: Option<Tick>,
        to_net: EntityMap<'_>,
        out: &mut Vec<u8>,
        changes: &mut Vec<Change>,
    ) {
        let Self {
            codec, map, query, ..
        } = self;
        for (entity, value, owner) in query.iter(world) {
            if !owner.is_local() {
                continue;
            }
            let (added, changed) = match since {
                None => (true, true),
                Some(since) => (value.is_added_after(since), value.is_changed_after(since)),
            };
            if !changed {
                continue;
            }
            let start = out.len();
            match map {
                None => codec.encode(&value, out),
                Some(map) => encode_mapped(codec.as_ref(), *map, &value, to_net, out),
            }
            changes.push(Change {
                entity,
                added,
                start,
                end: out.len(),
            });
        }
    }

    fn encode(
        &self,
        world: &World,
        entity: Entity,
        to_net: EntityMap<'_>,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(value) = world.get::<C>(entity) else {
            return false;
        };
        match self.map {
            None => self.codec.encode(value, out),
            Some(map) => encode_mapped(self.codec.as_ref(), map, value, to_net, out),
        }
        true
    }

    fn decode_into(
        &self,
        world: &mut World,
        entity: Entity,
        to_local: EntityResolver<'_>,
        input: &mut &[u8],
    ) -> Result<(), CodecError> {
        let mut value = self.codec.decode(input)?;
        if let Some(map) = self.map {
            map(&mut value, &mut |net| to_local(world, net));
        }
        let Ok(mut target) = world.get_entity_mut(entity) else {
            return Ok(());
        };
        let value = match self.receive_hook {
            Some(hook) => match hook(&mut target, value) {
                Some(value) => value,
                None => return Ok(()),
            },
            None => value,
        };
        match target.get_mut::<C>() {
            Some(mut current) => *current = value,
            None => {
                target.insert(value);
            }
        }
        Ok(())
    }

    fn decode_skip(&self, input: &mut &[u8]) -> Result<(), CodecError> {
        self.codec.decode(input).map(drop)
    }

    fn remove(&self, world: &mut World, entity: Entity) {
        if let Ok(mut target) = world.get_entity_mut(entity) {
            target.remove::<C>();
        }
    }
}

/// Mapped components are encoded from a copy whose entities were translated. The copy is made
/// by decoding the plain encoding, mapping, and encoding again: it needs no `Clone` bound here,
/// and mapped components (rare, small) can afford it.
fn encode_mapped<C: 'static>(
    codec: &dyn ComponentCodec<C>,
    map: MapFn<C>,
    value: &C,
    to_net: EntityMap<'_>,
    out: &mut Vec<u8>,
) {
    let mut plain = Vec::new();
    codec.encode(value, &mut plain);
    match codec.decode(&mut plain.as_slice()) {
        Ok(mut copy) => {
            map(&mut copy, to_net);
            codec.encode(&copy, out);
        }
        Err(error) => {
            tracing::error!(
                "{} does not decode what it encodes: {error}",
                type_name::<C>()
            );
            out.extend_from_slice(&plain);
        }
    }
}

pub(crate) struct Registration {
    pub(crate) name: &'static str,
    type_id: TypeId,
    pub(crate) erased: Box<dyn ErasedComponent>,
    /// How its values go as differences, if they do.
    pub(crate) delta: Option<Box<dyn DeltaCodec>>,
}

/// Every replicated component, in registration order: the index is the wire id.
#[derive(Resource, Default)]
pub(crate) struct ReplicationRegistry {
    pub(crate) components: Vec<Registration>,
}

impl ReplicationRegistry {
    pub(crate) fn get(&self, index: u16) -> Option<&Registration> {
        self.components.get(usize::from(index))
    }
}

pub(crate) fn register<C: Component<Mutability = Mutable>>(
    app: &mut App,
    codec: Box<dyn ComponentCodec<C>>,
    map: Option<MapFn<C>>,
) {
    let world = app.world_mut();
    assert!(
        world.contains_resource::<ReplicationRegistry>(),
        "add PeersyncPlugin before registering replicated components"
    );
    let name = type_name::<C>();
    let registry = world.resource::<ReplicationRegistry>();
    assert!(
        !registry
            .components
            .iter()
            .any(|r| r.type_id == TypeId::of::<C>()),
        "component {name} registered for replication twice"
    );
    let index = registry.components.len();
    assert!(
        index < usize::from(u16::MAX),
        "too many replicated components"
    );
    let index = index as u16;
    let query = world.query_filtered::<(Entity, Ref<C>, &Owner), With<Replicated>>();
    let delta = codec.delta();
    let differences = if delta.is_some() { ":delta" } else { "" };
    world
        .resource_mut::<ReplicationRegistry>()
        .components
        .push(Registration {
            name,
            type_id: TypeId::of::<C>(),
            erased: Box::new(Typed {
                codec,
                map,
                query,
                receive_hook: None,
            }),
            delta,
        });
    world.resource_mut::<ProtocolRegistry>().push(format!(
        "component:{name}:{}{differences}",
        if map.is_some() { "mapped" } else { "plain" }
    ));
    app.add_observer(
        move |removed: On<Remove, C>, mut changes: ResMut<LocalChanges>| {
            changes.component_removed(removed.entity, index);
        },
    );
}

/// Routes received values of `C` through `hook`; false if `C` is not replicated.
pub(crate) fn set_receive_hook<C: Component<Mutability = Mutable>>(
    registry: &mut ReplicationRegistry,
    hook: ReceiveHook<C>,
) -> bool {
    let typed = registry
        .components
        .iter_mut()
        .filter(|registration| registration.type_id == TypeId::of::<C>())
        .find_map(|registration| registration.erased.as_any_mut().downcast_mut::<Typed<C>>());
    match typed {
        Some(typed) => {
            typed.receive_hook = Some(hook);
            true
        }
        None => false,
    }
}

/// Sends values of `C` as differences with `delta`.
pub(crate) fn set_delta<C: Component>(app: &mut App, delta: Box<dyn DeltaCodec>) {
    let name = type_name::<C>();
    let mut registry = app.world_mut().resource_mut::<ReplicationRegistry>();
    let registration = registry
        .components
        .iter_mut()
        .find(|registration| registration.type_id == TypeId::of::<C>())
        .unwrap_or_else(|| panic!("register {name} for replication before its differences"));
    registration.delta = Some(delta);
    app.world_mut()
        .resource_mut::<ProtocolRegistry>()
        .push(format!("delta:{name}"));
}
