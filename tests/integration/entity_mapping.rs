//! `Entity` fields of replicated components point at the receiver's own copy of the entity.

use std::time::Duration;

use crate::support::sim::*;
use bevy::ecs::entity::{EntityMapper, MapEntities};
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use serde::{Deserialize, Serialize};

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

/// Three peers where peer 0's packets take `delay` to reach peer 2: peer 2 hears of peer 0's
/// entities last, after peer 1's entities that refer to them.
fn slow_link_from_0_to_2(seed: u64, delay: Duration, setup: fn(&mut App)) -> Sim {
    let mut sim = Sim::new(seed, LinkConditioner::PERFECT, 0, setup);
    for _ in 0..3 {
        // Peer 2 hears nothing from peer 0 for as long as the test runs: with the default
        // timeout it would drop it as gone, and this test is about references, not liveness.
        sim.join_with_session(bevy_peersync::SessionConfig {
            peer_timeout: Duration::from_secs(60),
            ..default()
        });
    }
    sim.connect_all();
    let (a, c) = (local_id(&sim.apps[0]), local_id(&sim.apps[2]));
    sim.net.set_link(
        a,
        c,
        LinkConditioner {
            latency: delay,
            ..LinkConditioner::PERFECT
        },
    );
    sim
}

/// Peer 0 spawns `n` leaders; once peer 1 has them, peer 1 spawns a follower of each.
/// Returns the leaders' and followers' net ids.
fn followers_of_new_leaders(sim: &mut Sim, n: usize) -> (Vec<u64>, Vec<u64>) {
    let leaders: Vec<Entity> = (0..n)
        .map(|i| {
            sim.apps[0]
                .world_mut()
                .spawn((Replicated, Health(i as u32)))
                .id()
        })
        .collect();
    sim.run_until(Duration::from_secs(1), "peer 1 has the leaders", |sim| {
        held(&mut sim.apps[1]).len() == n
    });
    let leader_ids: Vec<u64> = leaders
        .iter()
        .map(|e| sim.apps[0].world().get::<NetId>(*e).unwrap().0)
        .collect();
    let followers: Vec<Entity> = leader_ids
        .iter()
        .map(|id| {
            let leader_at_1 = local_entity(&mut sim.apps[1], *id).unwrap();
            sim.apps[1]
                .world_mut()
                .spawn((Replicated, Follows(leader_at_1)))
                .id()
        })
        .collect();
    sim.step();
    let follower_ids = followers
        .iter()
        .map(|e| sim.apps[1].world().get::<NetId>(*e).unwrap().0)
        .collect();
    (leader_ids, follower_ids)
}

#[test]
fn a_reference_holds_when_the_referenced_entity_arrives_after_it() {
    let mut sim = slow_link_from_0_to_2(33, Duration::from_millis(500), setup);
    let (leaders, followers) = followers_of_new_leaders(&mut sim, 1);
    sim.run_until(
        Duration::from_millis(300),
        "peer 2 has the follower",
        |sim| local_entity(&mut sim.apps[2], followers[0]).is_some(),
    );
    assert!(
        local_entity(&mut sim.apps[2], leaders[0]).is_none(),
        "the leader should still be on its way to peer 2 (the test relies on that order)"
    );
    sim.run_until(Duration::from_secs(1), "peer 2 has the leader", |sim| {
        local_entity(&mut sim.apps[2], leaders[0]).is_some()
    });
    // Nothing changed on peer 1 since it sent the follower: the reference it sent first holds.
    let app = &mut sim.apps[2];
    let leader_here = local_entity(app, leaders[0]).unwrap();
    let follower_here = local_entity(app, followers[0]).unwrap();
    assert_eq!(
        app.world().get::<Follows>(follower_here),
        Some(&Follows(leader_here)),
        "the follower should point at peer 2's copy of the leader, which arrived after it"
    );
    assert_eq!(
        app.world().get::<Health>(leader_here),
        Some(&Health(0)),
        "the entity made for the reference should have become the leader, with its components"
    );
}

fn setup_short_wait(app: &mut App) {
    setup(app);
    app.insert_resource(bevy_peersync::replication::ReplicationConfig {
        unresolved_reference_timeout: Duration::from_secs(2),
        max_unresolved_references: 1,
        ..default()
    });
}

/// Entities peer 2 holds that are neither resources nor replicas: what it made for references.
fn unreplicated_entities(app: &mut App) -> usize {
    let world = app.world_mut();
    let mut query = world
        .query_filtered::<Entity, (Without<NetId>, Without<bevy::ecs::resource::IsResource>)>();
    query.iter(world).count()
}

#[test]
fn references_to_entities_that_never_arrive_are_limited_and_given_up() {
    let mut sim = slow_link_from_0_to_2(34, Duration::from_secs(3600), setup_short_wait);
    let before = unreplicated_entities(&mut sim.apps[2]);
    let (_, followers) = followers_of_new_leaders(&mut sim, 2);
    sim.run_until(
        Duration::from_millis(300),
        "peer 2 has both followers",
        |sim| {
            followers
                .iter()
                .all(|id| local_entity(&mut sim.apps[2], *id).is_some())
        },
    );
    let targets = |app: &mut App| -> Vec<Entity> {
        followers
            .iter()
            .map(|id| {
                let follower = local_entity(app, *id).unwrap();
                app.world().get::<Follows>(follower).unwrap().0
            })
            .collect()
    };
    let waiting = targets(&mut sim.apps[2]);
    assert_eq!(
        waiting
            .iter()
            .filter(|e| **e == Entity::PLACEHOLDER)
            .count(),
        1,
        "with room for one unresolved reference, the other follower should get a placeholder: \
         {waiting:?}"
    );
    assert_eq!(
        unreplicated_entities(&mut sim.apps[2]),
        before + 1,
        "peer 2 should have made exactly one entity for the unresolved reference"
    );
    sim.run_until(
        Duration::from_secs(3),
        "the entity made for the reference is given up",
        |sim| unreplicated_entities(&mut sim.apps[2]) == before,
    );
    let app = &mut sim.apps[2];
    for target in targets(app) {
        assert!(
            app.world().get_entity(target).is_err() || target == Entity::PLACEHOLDER,
            "a reference whose entity never came should dangle like any despawned entity's"
        );
    }
}

/// Every follower an app holds, by net id, with the net id of the entity it points at (`None`
/// for a placeholder or an entity without one).
fn follow_graph(app: &mut App) -> std::collections::BTreeMap<u64, Option<u64>> {
    let world = app.world_mut();
    let mut followers = world.query::<(&NetId, &Follows)>();
    let pairs: Vec<(u64, Entity)> = followers
        .iter(world)
        .map(|(id, follows)| (id.0, follows.0))
        .collect();
    pairs
        .into_iter()
        .map(|(id, target)| (id, world.get::<NetId>(target).map(|t| t.0)))
        .collect()
}

#[test]
fn references_hold_under_a_bad_network_and_for_a_late_joiner() {
    let bad = LinkConditioner {
        loss: 0.2,
        latency: Duration::from_millis(100),
        jitter: Duration::from_millis(30),
        duplicate: 0.05,
        reorder: 0.1,
    };
    for seed in [35, 36] {
        let mut sim = Sim::new(seed, bad, 3, setup);
        sim.connect_all();
        let leaders: Vec<Entity> = (0..3)
            .map(|i| {
                sim.apps[i]
                    .world_mut()
                    .spawn((Replicated, Health(i as u32)))
                    .id()
            })
            .collect();
        sim.run_until(
            Duration::from_secs(3),
            "every peer has every leader",
            |sim| sim.apps.iter_mut().all(|app| held(app).len() == 3),
        );
        // Each peer follows the next peer's leader: every reference crosses owners.
        for i in 0..3 {
            let next = leaders[(i + 1) % 3];
            let next_id = sim.apps[(i + 1) % 3].world().get::<NetId>(next).unwrap().0;
            let here = local_entity(&mut sim.apps[i], next_id).unwrap();
            sim.apps[i].world_mut().spawn((Replicated, Follows(here)));
        }
        sim.run_for(Duration::from_millis(200));
        let late = sim.join();
        sim.run_until(
            Duration::from_secs(5),
            "every peer, the late joiner too, holds the owners' state",
            |sim| {
                sim.apps[late].world().resource::<ConnectedPeers>().len() == 3
                    && converged(&mut sim.apps)
            },
        );
        let truth = follow_graph(&mut sim.apps[0]);
        assert_eq!(truth.len(), 3, "peer 0 should hold the three followers");
        assert!(
            truth.values().all(Option::is_some),
            "on peer 0 every follower should point at a leader: {truth:?}"
        );
        for (index, app) in sim.apps.iter_mut().enumerate() {
            assert_eq!(
                follow_graph(app),
                truth,
                "seed {seed}: on peer {index} each follower should point at that peer's copy of \
                 the leader it follows"
            );
        }
    }
}
