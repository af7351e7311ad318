//! Interest management: each owner decides which peers see its entities. A peer not shown an
//! entity never holds it and never receives its values; one shown it again gets it as it is now.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::support::sim::*;
use bevy::ecs::entity::{EntityMapper, MapEntities};
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::InterestStats;
use bevy_peersync::replication::codec::CodecError;
use serde::{Deserialize, Serialize};

/// Who an entity follows (a mapped reference).
#[derive(Component, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Follows(Entity);

impl MapEntities for Follows {
    fn map_entities<M: EntityMapper>(&mut self, mapper: &mut M) {
        self.0 = mapper.get_mapped(self.0);
    }
}

/// A value whose every decoding is recorded, to tell what a peer received.
#[derive(Component, Clone, Copy, Debug, PartialEq)]
struct Secret(u32);

/// Every `Secret` value decoded by any app of the test that uses it (only one test does).
static DECODED_SECRETS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn setup(app: &mut App) {
    replicate_basics(app);
    app.replicate_mapped::<Follows>().replicate_with::<Secret>(
        |secret, out| out.extend_from_slice(&secret.0.to_le_bytes()),
        |input| {
            let (bytes, rest) = input
                .split_first_chunk::<4>()
                .ok_or_else(|| CodecError("short secret".into()))?;
            *input = rest;
            let value = u32::from_le_bytes(*bytes);
            DECODED_SECRETS.lock().unwrap().push(value);
            Ok(Secret(value))
        },
    );
}

fn grid_setup(app: &mut App) {
    setup(app);
    app.grid_interest(GridInterest {
        cell_size: 10.0,
        radius: 20.0,
        hysteresis: 2.0,
    });
}

fn room(seed: u64, peers: usize, setup: fn(&mut App)) -> Sim {
    let mut sim = Sim::new(
        seed,
        LinkConditioner {
            latency: Duration::from_millis(20),
            loss: 0.05,
            ..LinkConditioner::PERFECT
        },
        peers,
        setup,
    );
    sim.connect_all();
    sim
}

fn player(app: &App) -> PlayerId {
    app.world()
        .resource::<ConnectedPeers>()
        .local_player()
        .expect("a player identity")
}

fn holds(app: &mut App, net_id: u64) -> bool {
    held(app).contains_key(&net_id)
}

fn entity_with(app: &mut App, net_id: u64) -> Option<Entity> {
    let world = app.world_mut();
    let mut query = world.query::<(Entity, &NetId)>();
    query
        .iter(world)
        .find(|(_, id)| id.0 == net_id)
        .map(|(entity, _)| entity)
}

/// Spawns a replicated entity on `sim.apps[owner]` and steps until it has its net id.
fn spawn(sim: &mut Sim, owner: usize, bundle: impl Bundle) -> (Entity, u64) {
    let entity = sim.apps[owner].world_mut().spawn((Replicated, bundle)).id();
    sim.run_until(
        Duration::from_millis(100),
        "the entity is announced",
        |sim| sim.apps[owner].world().get::<NetId>(entity).is_some(),
    );
    let id = sim.apps[owner].world().get::<NetId>(entity).unwrap().0;
    (entity, id)
}

#[test]
fn an_audience_shows_an_entity_to_the_players_it_names_only() {
    let mut sim = room(81, 3, setup);
    let p1 = player(&sim.apps[1]);
    let (secret, secret_id) = spawn(&mut sim, 0, (Health(1), Audience::only([p1])));
    let (_, public_id) = spawn(&mut sim, 0, Health(2));
    sim.run_until(
        Duration::from_secs(2),
        "peer 1 holds both entities, peer 2 the public one",
        |sim| {
            assert!(
                !holds(&mut sim.apps[2], secret_id),
                "peer 2 is never shown the entity for player 1"
            );
            holds(&mut sim.apps[1], secret_id)
                && holds(&mut sim.apps[1], public_id)
                && holds(&mut sim.apps[2], public_id)
        },
    );
    let peer2 = local_id(&sim.apps[2]);
    let stats = sim.apps[0].world().resource::<InterestStats>();
    assert_eq!(
        stats.hidden_from(peer2),
        1,
        "one entity is hidden from peer 2"
    );
    assert_eq!(stats.hidden_from(local_id(&sim.apps[1])), 0);

    // The rule turns around: the entity leaves peer 1 and comes to peer 2.
    *sim.apps[0].world_mut().get_mut::<Audience>(secret).unwrap() = Audience::all_but([p1]);
    sim.run_until(
        Duration::from_secs(2),
        "the entity leaves peer 1 and reaches peer 2",
        |sim| !holds(&mut sim.apps[1], secret_id) && holds(&mut sim.apps[2], secret_id),
    );
    assert_eq!(held(&mut sim.apps[2])[&secret_id].health, Some(Health(1)));
    assert!(
        holds(&mut sim.apps[1], public_id),
        "the public entity stays where it was"
    );

    // Without a rule, everyone is shown it.
    sim.apps[0]
        .world_mut()
        .entity_mut(secret)
        .remove::<Audience>();
    sim.run_until(Duration::from_secs(2), "everyone holds everything", |sim| {
        converged(&mut sim.apps)
    });
    let stats = sim.apps[0].world().resource::<InterestStats>();
    assert_eq!(stats.hidden_from(peer2), 0);
    assert!(
        stats.revealed() >= 2 && stats.concealed() >= 1,
        "shown twice (to peer 2, back to peer 1), hidden once: {stats:?}"
    );
}

#[test]
fn a_peer_never_receives_the_values_of_an_entity_hidden_from_it() {
    // Two peers: every `Secret` decoded is decoded by peer 1, the owner decodes none.
    let mut sim = room(82, 2, setup);
    let p1 = player(&sim.apps[1]);
    let (hidden, hidden_id) = spawn(
        &mut sim,
        0,
        (Secret(1_000_000), Health(10), Audience::all_but([p1])),
    );
    let (shown, shown_id) = spawn(&mut sim, 0, (Secret(0), Health(20)));
    // Both change every frame for a second; the hidden one also gains and loses components.
    for frame in 1..=60u32 {
        let world = sim.apps[0].world_mut();
        world.get_mut::<Secret>(hidden).unwrap().0 = 1_000_000 + frame;
        world.get_mut::<Secret>(shown).unwrap().0 = frame;
        world.get_mut::<Health>(hidden).unwrap().0 = 10 + frame;
        if let Some(mut transform) = world.get_mut::<Transform>(hidden) {
            transform.translation.x = frame as f32;
        }
        match frame {
            10 => {
                world.entity_mut(hidden).insert(Tag("hidden".into()));
            }
            20 => {
                world
                    .entity_mut(hidden)
                    .insert(Transform::from_xyz(1.0, 2.0, 3.0));
            }
            30 => {
                world.entity_mut(hidden).remove::<Tag>();
            }
            40 => {
                world.entity_mut(hidden).insert(Tag("back".into()));
            }
            _ => {}
        }
        sim.step();
        assert!(
            !holds(&mut sim.apps[1], hidden_id),
            "the hidden entity never appears on peer 1"
        );
    }
    sim.run_until(
        Duration::from_secs(2),
        "peer 1 has the shown entity's last value",
        |sim| {
            let app = &mut sim.apps[1];
            entity_with(app, shown_id).and_then(|entity| app.world().get::<Secret>(entity).copied())
                == Some(Secret(60))
        },
    );
    let decoded = DECODED_SECRETS.lock().unwrap().clone();
    assert!(
        decoded.iter().any(|value| *value < 1_000_000),
        "the shown entity's values were decoded"
    );
    assert!(
        decoded.iter().all(|value| *value < 1_000_000),
        "no value of the hidden entity was ever decoded by peer 1: {:?}",
        decoded
            .iter()
            .filter(|v| **v >= 1_000_000)
            .collect::<Vec<_>>()
    );

    // Shown now: it arrives as it is, with what changed while it was hidden.
    sim.apps[0]
        .world_mut()
        .entity_mut(hidden)
        .remove::<Audience>();
    sim.run_until(Duration::from_secs(2), "peer 1 holds it", |sim| {
        holds(&mut sim.apps[1], hidden_id)
    });
    let app = &mut sim.apps[1];
    let here = entity_with(app, hidden_id).unwrap();
    assert_eq!(app.world().get::<Secret>(here), Some(&Secret(1_000_060)));
    assert_eq!(app.world().get::<Health>(here), Some(&Health(70)));
    assert_eq!(app.world().get::<Tag>(here), Some(&Tag("back".into())));
    let translation = app.world().get::<Transform>(here).unwrap().translation;
    assert!(
        translation.distance(Vec3::new(60.0, 2.0, 3.0)) < 0.01,
        "where the owner moved it while hidden: {translation}"
    );
    // And it follows its owner from then on.
    let world = sim.apps[0].world_mut();
    world.get_mut::<Secret>(hidden).unwrap().0 = 1_000_100;
    sim.run_until(Duration::from_secs(2), "its next change arrives", |sim| {
        let app = &mut sim.apps[1];
        app.world().get::<Secret>(here) == Some(&Secret(1_000_100))
    });
}

/// Puts `app`'s viewpoint (spawning it the first time) at `at`.
fn place_viewpoint(app: &mut App, at: Vec3) {
    let world = app.world_mut();
    let mut query = world.query_filtered::<(&mut Transform, &Owner), With<Viewpoint>>();
    if let Some((mut transform, _)) = query.iter_mut(world).find(|(_, owner)| owner.is_local()) {
        transform.translation = at;
        return;
    }
    world.spawn((Replicated, Viewpoint, Transform::from_translation(at)));
}

#[test]
fn the_grid_shows_each_player_what_is_near_its_viewpoints() {
    let mut sim = room(83, 3, grid_setup);
    place_viewpoint(&mut sim.apps[1], Vec3::ZERO);
    place_viewpoint(&mut sim.apps[2], Vec3::new(100.0, 0.0, 0.0));
    let (_, by_1) = spawn(&mut sim, 0, Transform::from_xyz(5.0, 0.0, 0.0));
    let (_, by_2) = spawn(&mut sim, 0, Transform::from_xyz(105.0, 0.0, 0.0));
    let (far, far_id) = spawn(
        &mut sim,
        0,
        (Transform::from_xyz(50.0, 50.0, 0.0), Health(1)),
    );
    let (_, nowhere) = spawn(&mut sim, 0, Health(5));
    let wanted =
        |near: &[u64]| -> BTreeSet<u64> { near.iter().copied().chain([nowhere]).collect() };
    let owned_by_0 = |sim: &mut Sim, index: usize| -> BTreeSet<u64> {
        let owner = local_id(&sim.apps[0]);
        held(&mut sim.apps[index])
            .into_iter()
            .filter(|(_, held)| held.owner == owner)
            .map(|(id, _)| id)
            .collect()
    };
    sim.run_until(
        Duration::from_secs(2),
        "each player holds what is near it and what has no position",
        |sim| owned_by_0(sim, 1) == wanted(&[by_1]) && owned_by_0(sim, 2) == wanted(&[by_2]),
    );

    // Player 2 walks over to player 1; the far entity comes near both, changing as it goes.
    place_viewpoint(&mut sim.apps[2], Vec3::new(1.0, 1.0, 0.0));
    {
        let world = sim.apps[0].world_mut();
        world.get_mut::<Transform>(far).unwrap().translation = Vec3::new(-3.0, 0.0, 0.0);
        world.get_mut::<Health>(far).unwrap().0 = 2;
    }
    sim.run_until(
        Duration::from_secs(2),
        "both players hold what is near the origin",
        |sim| {
            owned_by_0(sim, 1) == wanted(&[by_1, far_id])
                && owned_by_0(sim, 2) == wanted(&[by_1, far_id])
        },
    );
    assert_eq!(
        held(&mut sim.apps[2])[&far_id].health,
        Some(Health(2)),
        "it arrives with its current values"
    );
    assert_eq!(
        held(&mut sim.apps[1])[&far_id]
            .transform
            .map(|t| t.translation.x),
        Some(-3.0)
    );
    // Viewpoints are shown to everyone, wherever they are.
    for index in 0..3 {
        let world = sim.apps[index].world_mut();
        let viewpoints = world
            .query_filtered::<(), With<Viewpoint>>()
            .iter(world)
            .count();
        assert_eq!(viewpoints, 2, "peer {index} holds both viewpoints");
    }
}

#[test]
fn an_entity_handed_to_a_peer_that_did_not_see_it_arrives_there_whole() {
    let mut sim = room(84, 3, setup);
    let p2 = player(&sim.apps[2]);
    let (entity, id) = spawn(
        &mut sim,
        0,
        (Health(7), Tag("gift".into()), Audience::only([p2])),
    );
    sim.run_until(Duration::from_secs(2), "peer 2 holds it", |sim| {
        holds(&mut sim.apps[2], id)
    });
    assert!(!holds(&mut sim.apps[1], id), "peer 1 is not shown it");
    sim.apps[0].world_mut().get_mut::<Health>(entity).unwrap().0 = 8;
    let to = local_id(&sim.apps[1]);
    sim.apps[0]
        .world_mut()
        .commands()
        .entity(entity)
        .transfer_ownership(to);
    sim.run_until(
        Duration::from_secs(3),
        "peer 1 owns it, with its latest values, and everyone agrees",
        |sim| {
            let app = &mut sim.apps[1];
            let mine = entity_with(app, id).and_then(|e| app.world().get::<Owner>(e).copied())
                == Some(Owner::Local);
            mine && converged(&mut sim.apps) && sim.apps.iter_mut().all(|app| holds(app, id))
        },
    );
    assert_eq!(held(&mut sim.apps[1])[&id].health, Some(Health(8)));
    assert_eq!(held(&mut sim.apps[1])[&id].tag, Some(Tag("gift".into())));
    // Its new owner's changes reach everyone.
    let here = entity_with(&mut sim.apps[1], id).unwrap();
    sim.apps[1].world_mut().get_mut::<Health>(here).unwrap().0 = 9;
    sim.run_until(Duration::from_secs(2), "the change converges", |sim| {
        converged(&mut sim.apps) && held(&mut sim.apps[0])[&id].health == Some(Health(9))
    });
}

#[test]
fn a_reference_to_a_hidden_entity_resolves_once_it_is_shown() {
    let mut sim = room(85, 2, setup);
    let p1 = player(&sim.apps[1]);
    let (target, target_id) = spawn(&mut sim, 0, (Health(1), Audience::all_but([p1])));
    let (_, follower_id) = spawn(&mut sim, 0, (Health(2), Follows(target)));
    sim.run_until(Duration::from_secs(2), "peer 1 holds the follower", |sim| {
        holds(&mut sim.apps[1], follower_id)
    });
    let app = &mut sim.apps[1];
    let follower = entity_with(app, follower_id).unwrap();
    let pointed = app.world().get::<Follows>(follower).unwrap().0;
    assert!(!holds(app, target_id), "the target is hidden from peer 1");
    assert!(
        pointed != Entity::PLACEHOLDER && app.world().get::<Replicated>(pointed).is_none(),
        "the reference points at a reservation: an entity standing for the hidden one, empty"
    );

    sim.apps[0]
        .world_mut()
        .entity_mut(target)
        .remove::<Audience>();
    sim.run_until(Duration::from_secs(2), "peer 1 holds the target", |sim| {
        holds(&mut sim.apps[1], target_id)
    });
    let app = &mut sim.apps[1];
    let target_here = entity_with(app, target_id).unwrap();
    assert_eq!(
        app.world().get::<Follows>(follower),
        Some(&Follows(target_here)),
        "the reference now points at the replica of the target"
    );
    assert_eq!(target_here, pointed, "the reservation became the replica");
}

#[test]
fn world_entities_stay_with_the_host_and_the_peer_next_in_line() {
    let mut sim = room(86, 3, setup);
    let host = sim.agreed_host().expect("the room settled");
    let host_index = (0..3).find(|i| local_id(&sim.apps[*i]) == host).unwrap();
    // Shown to nobody by its rule; still held by whoever may have to take it over.
    let (_, id) = spawn(
        &mut sim,
        host_index,
        (HostOwned, Health(3), Audience::Only(BTreeSet::new())),
    );
    let others: Vec<usize> = (0..3).filter(|i| *i != host_index).collect();
    sim.run_until(Duration::from_secs(2), "one other peer holds it", |sim| {
        others
            .iter()
            .filter(|i| holds(&mut sim.apps[**i], id))
            .count()
            == 1
    });
    sim.run_for(Duration::from_millis(500));
    let holders: Vec<usize> = others
        .iter()
        .copied()
        .filter(|i| holds(&mut sim.apps[*i], id))
        .collect();
    assert_eq!(holders.len(), 1, "only the peer next in line holds it");
    let next = holders[0];

    sim.apps[host_index]
        .world_mut()
        .resource_mut::<PeerSocket>()
        .close();
    let next_id = local_id(&sim.apps[next]);
    sim.run_until(
        Duration::from_secs(5),
        "the peer next in line is host, owns it, and shows it to the other peer",
        |sim| {
            others.iter().all(|i| {
                let app = &mut sim.apps[*i];
                app.world().resource::<ConnectedPeers>().host() == Some(next_id)
                    && held(app).get(&id).is_some_and(|held| held.owner == next_id)
            })
        },
    );
    for i in &others {
        assert_eq!(held(&mut sim.apps[*i])[&id].health, Some(Health(3)));
    }
}

/// An entity of the bandwidth figure: it sways around where it was put.
#[derive(Component)]
struct Sways(Vec3);

fn sway(time: Res<Time>, mut swaying: Query<(&Sways, &mut Transform, &Owner)>) {
    let t = time.elapsed_secs();
    for (sways, mut transform, owner) in &mut swaying {
        if owner.is_local() {
            let phase = sways.0.x * 0.1 + sways.0.y * 0.37;
            transform.translation = sways.0 + Vec3::new((t * 3.0 + phase).sin(), 0.0, 0.0);
        }
    }
}

fn swaying(app: &mut App) {
    replicate_basics(app);
    app.add_systems(Update, sway);
}

fn swaying_on_a_grid(app: &mut App) {
    swaying(app);
    app.grid_interest(GridInterest::new(30.0));
}

/// Bytes per network tick the owner sends to each of two viewers, with 400 entities on a
/// 200 m × 200 m field all moving: `(viewer 1, viewer 2)`.
fn bytes_per_tick(setup: fn(&mut App)) -> (f32, f32) {
    let mut sim = Sim::new(
        87,
        LinkConditioner {
            latency: Duration::from_millis(20),
            ..LinkConditioner::PERFECT
        },
        3,
        setup,
    );
    sim.connect_all();
    for (index, at) in [
        (1, Vec3::new(50.0, 50.0, 0.0)),
        (2, Vec3::new(150.0, 150.0, 0.0)),
    ] {
        sim.apps[index]
            .world_mut()
            .spawn((Replicated, Viewpoint, Transform::from_translation(at)));
    }
    for x in 0..20 {
        for y in 0..20 {
            let home = Vec3::new(x as f32 * 10.0 + 5.0, y as f32 * 10.0 + 5.0, 0.0);
            sim.apps[0].world_mut().spawn((
                Replicated,
                Sways(home),
                Transform::from_translation(home),
            ));
        }
    }
    sim.run_for(Duration::from_secs(3));
    if sim.apps[0].world().contains_resource::<GridInterest>() {
        for (index, at) in [
            (1, Vec3::new(50.0, 50.0, 0.0)),
            (2, Vec3::new(150.0, 150.0, 0.0)),
        ] {
            holds_what_is_near(&mut sim, index, at, 30.0);
        }
    }
    let peers: Vec<PeerId> = (1..3).map(|i| local_id(&sim.apps[i])).collect();
    let owner = &mut sim.apps[0];
    let world = owner.world_mut();
    let mut stats = world.query::<(&Peer, &PeerStats)>();
    let mut per_tick = |peer: PeerId| {
        stats
            .iter(world)
            .find(|(p, _)| p.id == peer)
            .map(|(_, stats)| stats.sent_bytes_per_sec / 60.0)
            .expect("connected")
    };
    (per_tick(peers[0]), per_tick(peers[1]))
}

/// Checks that `sim.apps[viewer]` holds the owner's (app 0's) entities within `radius` of `at`
/// and none beyond the hysteresis band (a tenth of the radius), give or take a metre of sway.
fn holds_what_is_near(sim: &mut Sim, viewer: usize, at: Vec3, radius: f32) {
    let owner = local_id(&sim.apps[0]);
    let world = sim.apps[0].world_mut();
    let mut owned = world.query::<(&NetId, &Transform, &Owner, &Sways)>();
    let distances: Vec<(u64, f32)> = owned
        .iter(world)
        .filter(|(_, _, o, _)| o.is_local())
        .map(|(id, t, _, _)| (id.0, t.translation.distance(at)))
        .collect();
    let held: BTreeSet<u64> = held(&mut sim.apps[viewer])
        .into_iter()
        .filter(|(_, h)| h.owner == owner)
        .map(|(id, _)| id)
        .collect();
    let must: Vec<u64> = distances
        .iter()
        .filter(|(_, d)| *d <= radius - 1.0)
        .map(|(id, _)| *id)
        .collect();
    let may: BTreeSet<u64> = distances
        .iter()
        .filter(|(_, d)| *d <= radius * 1.1 + 1.0)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        must.len() > 10 && must.iter().all(|id| held.contains(id)),
        "viewer {viewer} holds every entity within the radius ({} of them; it holds {})",
        must.len(),
        held.len()
    );
    assert!(
        held.is_subset(&may),
        "viewer {viewer} holds nothing beyond the radius and its hysteresis band"
    );
}

/// The figure in BENCHMARKS.md ("Interest management"):
/// `cargo test --test integration interest::figure -- --nocapture`.
#[test]
fn figure_a_grid_rule_cuts_what_each_viewer_is_sent() {
    let everything = bytes_per_tick(swaying);
    let near_only = bytes_per_tick(swaying_on_a_grid);
    println!(
        "bytes per tick to each viewer, 400 moving entities: without interest {:.0} / {:.0}, \
         grid radius 30 m {:.0} / {:.0}",
        everything.0, everything.1, near_only.0, near_only.1
    );
    for (all, near) in [(everything.0, near_only.0), (everything.1, near_only.1)] {
        assert!(
            near * 5.0 < all,
            "a viewer that sees about a tenth of the field should be sent far less: {near:.0} \
             bytes per tick with the grid against {all:.0} without"
        );
    }
}

#[test]
fn a_change_made_just_after_an_entity_is_shown_is_not_lost() {
    for seed in [88, 89, 90] {
        change_after_showing(seed);
    }
}

/// Under heavy loss the unreliable change can overtake the reliable spawn that shows the
/// entity; it must wait for the spawn rather than be dropped (and acknowledged) before it.
fn change_after_showing(seed: u64) {
    let mut sim = Sim::new(
        seed,
        LinkConditioner {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            loss: 0.3,
            ..LinkConditioner::PERFECT
        },
        2,
        setup,
    );
    sim.connect_all();
    let p1 = player(&sim.apps[1]);
    let mut entities = Vec::new();
    for index in 0..30 {
        entities.push(spawn(&mut sim, 0, (Health(index), Audience::all_but([p1]))));
    }
    sim.run_for(Duration::from_millis(500));
    for round in 1..=10u32 {
        for (entity, _) in &entities {
            sim.apps[0]
                .world_mut()
                .entity_mut(*entity)
                .remove::<Audience>();
        }
        sim.step();
        sim.step();
        for (entity, _) in &entities {
            sim.apps[0]
                .world_mut()
                .get_mut::<Health>(*entity)
                .unwrap()
                .0 = 1000 * round;
        }
        sim.run_until(
            Duration::from_secs(5),
            "peer 1 holds every entity with the change made after it was shown",
            |sim| {
                entities.iter().all(|(_, id)| {
                    held(&mut sim.apps[1])
                        .get(id)
                        .is_some_and(|held| held.health == Some(Health(1000 * round)))
                })
            },
        );
        for (entity, _) in &entities {
            sim.apps[0]
                .world_mut()
                .entity_mut(*entity)
                .insert(Audience::all_but([p1]));
        }
        sim.run_until(Duration::from_secs(5), "peer 1 holds none", |sim| {
            entities.iter().all(|(_, id)| !holds(&mut sim.apps[1], *id))
        });
    }
}
