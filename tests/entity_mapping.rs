//! `Entity` fields of replicated components point at the receiver's own copy of the entity.

#[path = "support/sim.rs"]
mod sim;

use std::time::Duration;

use bevy::ecs::entity::{EntityMapper, MapEntities};
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use serde::{Deserialize, Serialize};
use sim::*;

/// Who an entity follows.
#[derive(Component, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Follows(Entity);

impl MapEntities for Follows {
    fn map_entities<M: EntityMapper>(&mut self, mapper: &mut M) {
        self.0 = mapper.get_mapped(self.0);
    }
}

fn setup(app: &mut App) {
    replicate_basics(app);
    app.replicate_mapped::<Follows>();
}

fn local_entity(app: &mut App, net_id: u64) -> Option<Entity> {
    let world = app.world_mut();
    let mut query = world.query::<(Entity, &NetId)>();
    query
        .iter(world)
        .find(|(_, id)| id.0 == net_id)
        .map(|(e, _)| e)
}

#[test]
fn references_are_mapped_to_the_receivers_entities() {
    let mut sim = Sim::new(31, LinkConditioner::PERFECT, 3, setup);
    sim.connect_all();
    // A leader owned by peer 0, a follower owned by peer 1 that points at it.
    let leader = sim.apps[0].world_mut().spawn((Replicated, Health(1))).id();
    sim.run_until(Duration::from_secs(1), "peer 1 has the leader", |sim| {
        held(&mut sim.apps[1]).len() == 1
    });
    let leader_id = sim.apps[0].world().get::<NetId>(leader).unwrap().0;
    let leader_at_1 = local_entity(&mut sim.apps[1], leader_id).unwrap();
    let follower = sim.apps[1]
        .world_mut()
        .spawn((Replicated, Health(2), Follows(leader_at_1)))
        .id();
    sim.run_until(Duration::from_secs(1), "everyone has both", |sim| {
        sim.apps.iter_mut().all(|app| held(app).len() == 2)
    });
    let follower_id = sim.apps[1].world().get::<NetId>(follower).unwrap().0;

    for index in [0, 2] {
        let app = &mut sim.apps[index];
        let follower_here = local_entity(app, follower_id).unwrap();
        let leader_here = local_entity(app, leader_id).unwrap();
        assert_eq!(
            app.world().get::<Follows>(follower_here),
            Some(&Follows(leader_here)),
            "on peer {index} the follower points at that peer's copy of the leader"
        );
    }
}

#[test]
fn a_reference_to_an_entity_the_receiver_lacks_is_a_placeholder() {
    let mut sim = Sim::new(32, LinkConditioner::PERFECT, 2, setup);
    sim.connect_all();
    let unreplicated = sim.apps[0].world_mut().spawn_empty().id();
    sim.apps[0]
        .world_mut()
        .spawn((Replicated, Follows(unreplicated)));
    sim.run_until(Duration::from_secs(1), "the follower arrives", |sim| {
        held(&mut sim.apps[1]).len() == 1
    });
    let world = sim.apps[1].world_mut();
    let mut query = world.query::<&Follows>();
    assert_eq!(query.single(world).unwrap(), &Follows(Entity::PLACEHOLDER));
}
