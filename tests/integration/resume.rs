//! A player that loses its connection without a goodbye comes back as itself: its entities wait
//! for it (marked `Suspended`) and are its own again under its new id, with the same net ids. A
//! player that leaves on purpose is gone at once; one that does not come back, after the grace.

use std::time::Duration;

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::Suspended;

use crate::support::sim::*;

/// The resumes an app saw, as (previous id, new id).
#[derive(Resource, Default)]
struct Resumes(Vec<(PeerId, PeerId)>);

fn setup(app: &mut App) {
    replicate_basics(app);
    app.init_resource::<Resumes>().add_observer(
        |resumed: On<PeerResumed>, mut seen: ResMut<Resumes>| {
            seen.0.push((resumed.previous, resumed.peer));
        },
    );
}

/// What `app` holds of the entity with `health`: (net id, owner, suspended), one per copy.
fn copies(app: &mut App, health: u32) -> Vec<(u64, Owner, bool)> {
    let world = app.world_mut();
    let mut query = world.query::<(&NetId, &Owner, &Health, Has<Suspended>)>();
    query
        .iter(world)
        .filter(|(_, _, h, _)| h.0 == health)
        .map(|(id, owner, _, suspended)| (id.0, *owner, suspended))
        .collect()
}

/// Three peers; the one at `player` (not the host) owns an entity with `Health(7)`, and the host
/// a world entity with `Health(100)`.
fn room() -> (Sim, usize, Entity) {
    let mut sim = Sim::new(21, LinkConditioner::PERFECT, 3, setup);
    sim.connect_all();
    let host = sim.agreed_host().expect("the room settled");
    let host_index = sim
        .apps
        .iter()
        .position(|app| local_id(app) == host)
        .unwrap();
    let player = (host_index + 1) % 3;
    let entity = sim.apps[player]
        .world_mut()
        .spawn((Replicated, Health(7)))
        .id();
    sim.apps[host_index]
        .world_mut()
        .spawn((Replicated, HostOwned, Health(100)));
    sim.run_until(
        Duration::from_secs(1),
        "every peer holds both entities",
        |sim| {
            sim.apps
                .iter_mut()
                .all(|app| copies(app, 7).len() == 1 && copies(app, 100).len() == 1)
        },
    );
    (sim, player, entity)
}

#[test]
fn a_stopped_player_comes_back_as_itself_with_its_entities() {
    let (mut sim, player, entity) = room();
    let old_id = local_id(&sim.apps[player]);
    let net_id = copies(&mut sim.apps[0], 7)[0].0;
    let others: Vec<usize> = (0..3).filter(|i| *i != player).collect();
    let world_before = sim.apps[player]
        .world_mut()
        .query_filtered::<Entity, With<HostOwned>>()
        .single(sim.apps[player].world())
        .expect("the player holds the world entity");

    // Stopped for 6 s: longer than the peer timeout (2 s), within the resume grace (10 s).
    sim.frozen = vec![player];
    sim.run_for(Duration::from_secs(6));
    sim.frozen.clear();
    for i in &others {
        let held = copies(&mut sim.apps[*i], 7);
        assert_eq!(
            held,
            vec![(net_id, Owner::Peer(old_id), true)],
            "peer {i} keeps the stopped player's entity, marked Suspended"
        );
    }
    // It runs again: its first frame sees the 6 s gap, so it rejoins under a new id.
    sim.apps[player].insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_secs(6)));
    sim.apps[player].update();
    sim.apps[player].insert_resource(TimeUpdateStrategy::ManualDuration(DT));
    let took = sim.run_until(
        Duration::from_secs(3),
        "the player is back under a new id and owns its entity again everywhere, unsuspended",
        |sim| {
            let new_id = sim.apps[player]
                .world()
                .resource::<ConnectedPeers>()
                .local_id();
            new_id.is_some_and(|new_id| {
                new_id != old_id
                    && others.iter().all(|i| {
                        copies(&mut sim.apps[*i], 7) == vec![(net_id, Owner::Peer(new_id), false)]
                    })
            })
        },
    );
    let new_id = local_id(&sim.apps[player]);
    println!("resumed {took:?} after the stopped player ran again");
    for i in &others {
        assert_eq!(
            sim.apps[*i].world().resource::<Resumes>().0,
            vec![(old_id, new_id)],
            "peer {i} saw the player resume once, from its old id to its new one"
        );
    }
    assert_eq!(
        sim.apps[player].world().get::<NetId>(entity).map(|id| id.0),
        Some(net_id),
        "the player's own entity kept its net id"
    );
    let world_after = sim.apps[player]
        .world_mut()
        .query_filtered::<Entity, With<HostOwned>>()
        .single(sim.apps[player].world())
        .expect("the player still holds one world entity");
    assert_eq!(
        world_after, world_before,
        "the returning player kept its replica of the world entity (references to it hold)"
    );
    // Its changes count again.
    sim.apps[player]
        .world_mut()
        .entity_mut(entity)
        .insert(Tag("back".into()));
    sim.run_until(
        Duration::from_secs(1),
        "the resumed player's change reaches everyone",
        |sim| {
            others.iter().all(|i| {
                let app = &mut sim.apps[*i];
                let world = app.world_mut();
                let mut query = world.query::<(&NetId, &Tag)>();
                query
                    .iter(world)
                    .any(|(id, tag)| id.0 == net_id && tag.0 == "back")
            })
        },
    );
}

#[test]
fn a_player_that_leaves_on_purpose_is_gone_at_once() {
    let (mut sim, player, _) = room();
    sim.apps[player]
        .world_mut()
        .resource_mut::<PeerSocket>()
        .close();
    let others: Vec<usize> = (0..3).filter(|i| *i != player).collect();
    sim.run_until(
        Duration::from_millis(500),
        "the others despawn its entity without waiting for a resume",
        |sim| {
            others
                .iter()
                .all(|i| copies(&mut sim.apps[*i], 7).is_empty())
        },
    );
}

#[test]
fn a_player_that_does_not_come_back_is_gone_after_the_grace() {
    let (mut sim, player, _) = room();
    // The socket goes away without a goodbye, as when the process is killed.
    drop(sim.apps[player].world_mut().remove_resource::<PeerSocket>());
    let others: Vec<usize> = (0..3).filter(|i| *i != player).collect();
    sim.run_for(Duration::from_secs(1));
    for i in &others {
        assert!(
            copies(&mut sim.apps[*i], 7)
                .iter()
                .all(|(_, _, suspended)| *suspended)
                && copies(&mut sim.apps[*i], 7).len() == 1,
            "peer {i} keeps the lost player's entity, suspended"
        );
    }
    let took = sim.run_until(
        Duration::from_secs(12),
        "the entity is despawned once the resume grace (10 s) runs out",
        |sim| {
            others
                .iter()
                .all(|i| copies(&mut sim.apps[*i], 7).is_empty())
        },
    );
    assert!(
        took >= Duration::from_secs(8),
        "not before the grace: gone after {took:?} more"
    );
}
