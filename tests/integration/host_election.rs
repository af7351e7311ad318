//! The host is the peer that has been in the session longest: a joiner never takes over, and two
//! sessions that meet keep one world.

use std::time::Duration;

use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;

use crate::support::sim::*;

/// The HostChanged events an app saw, and whether it saw a merge.
#[derive(Resource, Default)]
struct Seen {
    hosts: Vec<Option<PeerId>>,
    merges: usize,
}

/// Replication plus a game rule: the host spawns the world (one `HostOwned` entity) once the
/// room has settled, and only once.
fn game(app: &mut App) {
    replicate_basics(app);
    app.init_resource::<Seen>()
        .add_observer(|changed: On<HostChanged>, mut seen: ResMut<Seen>| {
            seen.hosts.push(changed.host);
        })
        .add_observer(|_: On<SessionMerged>, mut seen: ResMut<Seen>| seen.merges += 1)
        .add_systems(Update, spawn_world_once);
}

fn spawn_world_once(peers: Res<ConnectedPeers>, mut spawned: Local<bool>, mut commands: Commands) {
    if !*spawned && peers.is_settled() && peers.is_host() {
        *spawned = true;
        commands.spawn((Replicated, HostOwned, Health(100)));
    }
}

/// Net ids and owners of the world entities an app holds.
fn world_entities(app: &mut App) -> Vec<(u64, PeerId)> {
    let mut entities: Vec<_> = held(app)
        .into_iter()
        .filter(|(_, held)| held.health == Some(Health(100)))
        .map(|(id, held)| (id, held.owner))
        .collect();
    entities.sort();
    entities
}

#[test]
fn a_joiner_with_a_lower_id_does_not_take_over() {
    let mut sim = Sim::new(7, LinkConditioner::PERFECT, 2, game);
    sim.connect_all();
    let host = sim.agreed_host().expect("two peers agree on a host");
    sim.run_until(Duration::from_secs(1), "both hold the world", |sim| {
        sim.apps
            .iter_mut()
            .all(|app| world_entities(app).len() == 1)
    });
    let world = world_entities(&mut sim.apps[0]);
    // Ids are random: join until one is lower than the host's.
    let joiner = loop {
        let joiner = sim.join();
        sim.step();
        if local_id(&sim.apps[joiner]) < host {
            break joiner;
        }
        assert!(sim.apps.len() < 20, "some joiner gets a lower id");
    };
    sim.run_until(Duration::from_secs(3), "the joiner settles", |sim| {
        sim.apps[joiner]
            .world()
            .resource::<ConnectedPeers>()
            .is_settled()
    });
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.agreed_host(),
        Some(host),
        "everyone keeps the host that was there first"
    );
    for app in &mut sim.apps {
        assert_eq!(
            world_entities(app),
            world,
            "the world entity stays with the host, one copy everywhere"
        );
    }
    let host_index = sim
        .apps
        .iter()
        .position(|app| local_id(app) == host)
        .unwrap();
    assert_eq!(
        sim.apps[host_index].world().resource::<Seen>().hosts,
        vec![Some(host)],
        "HostChanged fired once on the host: when the room settled"
    );
}

#[test]
fn two_peers_that_started_alone_keep_one_world_when_they_meet() {
    let mut sim = Sim::new(11, LinkConditioner::PERFECT, 2, game);
    sim.step();
    let (a, b) = (local_id(&sim.apps[0]), local_id(&sim.apps[1]));
    sim.net.cut(a, b);
    sim.run_until(
        Duration::from_secs(3),
        "each peer, alone, hosts its own world",
        |sim| {
            sim.apps.iter_mut().all(|app| {
                let me = local_id(app);
                world_entities(app)
                    .iter()
                    .map(|(_, owner)| *owner)
                    .collect::<Vec<_>>()
                    == vec![me]
            })
        },
    );
    sim.net.heal(a, b);
    sim.run_until(
        Duration::from_secs(3),
        "both agree on one host and hold one world entity, the same one, owned by it",
        |sim| {
            let Some(host) = sim.agreed_host() else {
                return false;
            };
            let worlds: Vec<_> = sim.apps.iter_mut().map(world_entities).collect();
            worlds[0].len() == 1 && worlds[0][0].1 == host && worlds[1] == worlds[0]
        },
    );
    // Nothing more happens afterwards: no second world comes back.
    sim.run_for(Duration::from_secs(2));
    let worlds: Vec<_> = sim.apps.iter_mut().map(world_entities).collect();
    assert_eq!(worlds[0].len(), 1, "still one world: {worlds:?}");
    assert_eq!(worlds[0], worlds[1], "the same one on both peers");
    let merges: Vec<usize> = sim
        .apps
        .iter()
        .map(|app| app.world().resource::<Seen>().merges)
        .collect();
    assert_eq!(
        merges.iter().sum::<usize>(),
        1,
        "exactly one peer (the younger session's) merged: {merges:?}"
    );
}
