//! Spawns, insertions, removals and despawns reach every peer, each tick's changes together.

use std::time::Duration;

use crate::support::sim::*;
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;

fn two_peers() -> Sim {
    let mut sim = Sim::new(5, LinkConditioner::PERFECT, 2, replicate_basics);
    sim.connect_all();
    sim
}

fn replica_of(app: &mut App, net_id: u64) -> Option<Held> {
    held(app).remove(&net_id)
}

#[test]
fn a_spawned_entity_appears_changes_and_goes_on_the_other_peer() {
    let mut sim = two_peers();
    let owner = local_id(&sim.apps[0]);
    let entity = sim.apps[0]
        .world_mut()
        .spawn((Replicated, Transform::from_xyz(1.0, 2.0, 3.0), Health(10)))
        .id();
    sim.run_until(Duration::from_secs(1), "the entity is sent", |sim| {
        sim.apps[0].world().get::<NetId>(entity).is_some()
    });
    let net_id = sim.apps[0].world().get::<NetId>(entity).unwrap().0;
    sim.run_until(Duration::from_secs(1), "the replica appears", |sim| {
        replica_of(&mut sim.apps[1], net_id).is_some()
    });
    let replica = replica_of(&mut sim.apps[1], net_id).unwrap();
    assert_eq!(replica.owner, owner, "the replica is owned by its spawner");
    assert_eq!(replica.health, Some(Health(10)));
    assert_eq!(
        replica.transform.unwrap().translation,
        Vec3::new(1.0, 2.0, 3.0)
    );

    sim.apps[0]
        .world_mut()
        .entity_mut(entity)
        .insert(Tag("new".into()));
    sim.run_until(
        Duration::from_secs(1),
        "the inserted component arrives",
        |sim| replica_of(&mut sim.apps[1], net_id).unwrap().tag == Some(Tag("new".into())),
    );
    sim.apps[0].world_mut().entity_mut(entity).remove::<Tag>();
    sim.apps[0].world_mut().get_mut::<Health>(entity).unwrap().0 = 3;
    sim.run_until(
        Duration::from_secs(1),
        "the removal and the change arrive",
        |sim| {
            let replica = replica_of(&mut sim.apps[1], net_id).unwrap();
            replica.tag.is_none() && replica.health == Some(Health(3))
        },
    );
    sim.apps[0].world_mut().entity_mut(entity).despawn();
    sim.run_until(Duration::from_secs(1), "the despawn arrives", |sim| {
        replica_of(&mut sim.apps[1], net_id).is_none()
    });
}

#[test]
fn one_tick_of_spawns_appears_in_one_frame() {
    let mut sim = Sim::new(
        6,
        LinkConditioner {
            latency: Duration::from_millis(40),
            jitter: Duration::from_millis(20),
            ..LinkConditioner::PERFECT
        },
        2,
        replicate_basics,
    );
    sim.connect_all();
    for i in 0..50 {
        sim.apps[0].world_mut().spawn((
            Replicated,
            Transform::from_xyz(i as f32, 0.0, 0.0),
            Health(i),
        ));
    }
    let mut counts = Vec::new();
    sim.run_until(Duration::from_secs(2), "all 50 arrive", |sim| {
        let count = held(&mut sim.apps[1]).len();
        counts.push(count);
        count == 50
    });
    assert!(
        counts.iter().all(|c| *c == 0 || *c == 50),
        "spawns of one tick are applied together: {counts:?}"
    );
}

#[test]
fn a_replica_changed_locally_is_not_sent_and_follows_its_owner_again() {
    let mut sim = two_peers();
    let entity = sim.apps[0]
        .world_mut()
        .spawn((Replicated, Transform::default(), Health(7)))
        .id();
    sim.run_until(Duration::from_secs(1), "the replica appears", |sim| {
        held(&mut sim.apps[1]).len() == 1
    });
    let net_id = sim.apps[0].world().get::<NetId>(entity).unwrap().0;

    // The non-owner writes to its replica: that is a local change only.
    let replica = {
        let world = sim.apps[1].world_mut();
        let mut query = world.query::<(Entity, &NetId)>();
        query.iter(world).find(|(_, id)| id.0 == net_id).unwrap().0
    };
    sim.apps[1]
        .world_mut()
        .get_mut::<Health>(replica)
        .unwrap()
        .0 = 999;
    sim.run_for(Duration::from_millis(300));
    assert_eq!(
        sim.apps[0].world().get::<Health>(entity),
        Some(&Health(7)),
        "the owner never takes a non-owner's value"
    );

    sim.apps[0].world_mut().get_mut::<Health>(entity).unwrap().0 = 8;
    sim.run_until(
        Duration::from_secs(1),
        "the owner's next change wins",
        |sim| sim.apps[1].world().get::<Health>(replica) == Some(&Health(8)),
    );
}
