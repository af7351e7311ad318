//! The host is the peer that has been in the session longest: a joiner never takes over, and two
//! sessions that meet keep one world.

use std::time::Duration;

use bevy::prelude::*;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::ReplicationConfig;
use bevy_peersync::{LinkConditioner, SessionConfig};

use crate::support::sim::*;

/// The HostChanged events an app saw, and whether it saw a merge.
#[derive(Resource, Default)]
struct Seen {
    hosts: Vec<Option<PeerId>>,
    /// The host's player, as each HostChanged said it.
    host_players: Vec<Option<PlayerId>>,
    merges: usize,
}

/// Replication plus a game rule: the host spawns the world (one `HostOwned` entity) once the
/// room has settled, and only once.
fn game(app: &mut App) {
    replicate_basics(app);
    app.init_resource::<Seen>()
        .add_observer(|changed: On<HostChanged>, mut seen: ResMut<Seen>| {
            seen.hosts.push(changed.host);
            seen.host_players.push(changed.host_player);
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
    let host_player = sim.apps[host_index]
        .world()
        .resource::<ConnectedPeers>()
        .local_player();
    for app in &sim.apps {
        assert_eq!(
            app.world().resource::<Seen>().host_players.last().copied(),
            Some(host_player),
            "HostChanged names the host's player, on the host and on the others"
        );
    }
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

/// Rejections an app reported, as (sender, reason).
#[derive(Resource, Default)]
struct Blamed(Vec<(PeerId, String)>);

/// Replication, and the rejections this app reports. The world entity is spawned by the test
/// (the `game` rule would have every new host spawn one of its own).
fn noting_blame(app: &mut App) {
    replicate_basics(app);
    app.init_resource::<Blamed>().add_observer(
        |rejected: On<PeerInputRejected>, mut blamed: ResMut<Blamed>| {
            blamed.0.push((rejected.peer, rejected.error.to_string()));
        },
    );
}

/// The world entities an app holds: (net id, owner, health).
fn world_values(app: &mut App) -> Vec<(u64, OwnerIs, u32)> {
    let world = app.world_mut();
    let mut query = world.query_filtered::<(&NetId, &Owner, &Health), With<HostOwned>>();
    query
        .iter(world)
        .map(|(id, owner, health)| (id.0, owner.into(), health.0))
        .collect()
}

/// The first peer founds the session alone and spawns the world entity `world`; then a quick
/// peer joins (one after the other, so it ranks right after the host whatever the ids), then a
/// late one with its own `session`. Returns (sim, quick, late) once everyone holds the world.
fn founded_room(seed: u64, world: impl Bundle, session: SessionConfig) -> (Sim, usize, usize) {
    let mut sim = Sim::new(seed, LinkConditioner::PERFECT, 1, noting_blame);
    sim.run_until(Duration::from_secs(3), "the first peer founds", |sim| {
        sim.apps[0].world().resource::<ConnectedPeers>().is_host()
    });
    sim.apps[0].world_mut().spawn(world);
    let quick = sim.join();
    sim.run_until(Duration::from_secs(3), "the quick peer settles", |sim| {
        sim.apps[quick]
            .world()
            .resource::<ConnectedPeers>()
            .is_settled()
    });
    let late = sim.join_with_session(session);
    sim.connect_all();
    sim.run_until(Duration::from_secs(2), "everyone holds the world", |sim| {
        sim.apps.iter_mut().all(|app| world_values(app).len() == 1)
    });
    (sim, quick, late)
}

/// Steps until `app` owns the world entity (it took it over as the new host); returns it.
fn until_it_owns_the_world(sim: &mut Sim, app: usize, limit: Duration, what: &str) -> Entity {
    sim.run_until(limit, what, |sim| {
        matches!(
            world_values(&mut sim.apps[app])[..],
            [(_, OwnerIs::Local, _)]
        )
    });
    sim.apps[app]
        .world_mut()
        .query_filtered::<Entity, With<HostOwned>>()
        .single(sim.apps[app].world())
        .unwrap()
}

#[test]
fn a_new_hosts_claim_waits_for_a_slower_peer_and_brings_the_values_changed_meanwhile() {
    // The host founds the session alone, then two peers join: one that notices a silent peer
    // after the default 2 s, one that needs 5 s and refuses a claim that waited 1 s.
    let (mut sim, quick, slow) = founded_room(
        13,
        (Replicated, HostOwned, Health(100), Tag("founding".into())),
        SessionConfig {
            peer_timeout: Duration::from_secs(5),
            ..SessionConfig::default()
        },
    );
    sim.apps[slow]
        .world_mut()
        .resource_mut::<ReplicationConfig>()
        .handover_timeout = Duration::from_secs(1);
    let new_host = local_id(&sim.apps[quick]);

    // The host hangs. The quick peer drops it after 2 s, becomes host, claims the world entity
    // and changes it; the slow peer still sees the old host for 3 s more.
    sim.frozen = vec![0];
    let world = until_it_owns_the_world(
        &mut sim,
        quick,
        Duration::from_secs(3),
        "the quick peer drops the hung host and owns the world",
    );
    sim.run_for(Duration::from_millis(200));
    sim.apps[quick]
        .world_mut()
        .get_mut::<Health>(world)
        .unwrap()
        .0 = 7;
    sim.run_for(Duration::from_millis(100));
    sim.apps[quick]
        .world_mut()
        .entity_mut(world)
        .remove::<Tag>();
    sim.run_for(Duration::from_millis(400));
    let slow_view = world_values(&mut sim.apps[slow]);
    assert!(
        matches!(slow_view[..], [(_, OwnerIs::Peer(owner), 100)] if owner != new_host),
        "the slow peer, still seeing the old host, keeps its copy while the claim waits: \
         {slow_view:?}"
    );

    sim.run_until(
        Duration::from_secs(6),
        "the slow peer drops the hung host, takes the new host's waiting claim and shows the \
         value it changed meanwhile",
        |sim| {
            world_values(&mut sim.apps[slow])[..]
                == [(world_net_id(sim, quick), OwnerIs::Peer(new_host), 7)]
        },
    );
    let tagged = sim.apps[slow]
        .world_mut()
        .query_filtered::<&Tag, With<HostOwned>>()
        .iter(sim.apps[slow].world())
        .count();
    assert_eq!(
        tagged, 0,
        "the component the new host removed while its claim waited is gone on the slow peer too"
    );
    let blamed = &sim.apps[slow].world().resource::<Blamed>().0;
    assert!(
        blamed.iter().all(|(peer, _)| *peer != new_host),
        "the new host, an honest peer, is never reported for its claim: {blamed:?}"
    );
}

fn world_net_id(sim: &mut Sim, app: usize) -> u64 {
    world_values(&mut sim.apps[app])[0].0
}

#[test]
fn a_host_whose_network_drops_rejoins_as_itself_and_the_session_keeps_one_world() {
    let mut sim = Sim::new(17, LinkConditioner::PERFECT, 3, noting_blame);
    sim.connect_all();
    let first_host = sim.agreed_host().unwrap();
    let founder = sim
        .apps
        .iter()
        .position(|app| local_id(app) == first_host)
        .unwrap();
    sim.apps[founder]
        .world_mut()
        .spawn((Replicated, HostOwned, Health(100)));
    sim.run_until(Duration::from_secs(2), "everyone holds the world", |sim| {
        sim.apps.iter_mut().all(|app| world_values(app).len() == 1)
    });
    let old_host = sim.agreed_host().unwrap();
    let cut_off = sim
        .apps
        .iter()
        .position(|app| local_id(app) == old_host)
        .unwrap();
    let player = sim.apps[cut_off]
        .world()
        .resource::<ConnectedPeers>()
        .local_player()
        .unwrap();
    let net_id = world_net_id(&mut sim, cut_off);

    // Its packets vanish both ways, and no link goes down: only the silence tells, as when a
    // laptop's Wi-Fi drops. Everyone times everyone out; the rejoin after it gets through.
    for app in &sim.apps {
        sim.net.silence(old_host, local_id(app));
    }
    let took = sim.run_until(
        Duration::from_secs(6),
        "the cut-off host rejoins under a new id and is the same player to the others; all \
         three agree on a host among the two that stayed, and hold the one world entity, owned \
         by that host",
        |sim| {
            let Some(host) = sim.agreed_host() else {
                return false;
            };
            let back = local_id(&sim.apps[cut_off]);
            let recognised = sim.apps.iter().enumerate().all(|(i, app)| {
                let peers = app.world().resource::<ConnectedPeers>();
                peers.len() == 2 && (i == cut_off || peers.player(back) == Some(player))
            });
            recognised
                && back != old_host
                && host != old_host
                && host != back
                && sim.apps.iter_mut().all(|app| {
                    let me = local_id(app);
                    let expected = if me == host {
                        OwnerIs::Local
                    } else {
                        OwnerIs::Peer(host)
                    };
                    world_values(app)[..] == [(net_id, expected, 100)]
                })
        },
    );
    eprintln!("a host cut off from everyone was back, with one world, after {took:?}");
}

/// The host's process dies without a goodbye; one survivor's WebRTC stack reports it at once,
/// the other's only 6 s later (and that one's peer timeout is longer still). The survivors
/// must converge on one host and one world, with the new host's latest value and nobody
/// blamed, once the late one has noticed.
#[test]
fn a_host_departure_seen_six_seconds_apart_converges_on_one_host_and_one_world() {
    let (mut sim, quick, late) = founded_room(
        29,
        (Replicated, HostOwned, Health(100)),
        SessionConfig {
            peer_timeout: Duration::from_secs(10),
            ..SessionConfig::default()
        },
    );
    let late_id = local_id(&sim.apps[late]);
    sim.net.delay_departures(late_id, Duration::from_secs(6));
    let new_host = local_id(&sim.apps[quick]);

    // The host's socket goes away without a goodbye, and the host never runs again.
    drop(sim.apps[0].world_mut().remove_resource::<PeerSocket>());
    sim.frozen = vec![0];
    let world = until_it_owns_the_world(
        &mut sim,
        quick,
        Duration::from_secs(1),
        "the quick survivor learns of the departure at once and owns the world",
    );
    sim.apps[quick]
        .world_mut()
        .get_mut::<Health>(world)
        .unwrap()
        .0 = 5;
    sim.run_for(Duration::from_secs(4));
    assert_ne!(
        sim.apps[late].world().resource::<ConnectedPeers>().host(),
        Some(new_host),
        "4 s in, the late survivor has not heard of the departure yet"
    );
    let took = sim.run_until(
        Duration::from_secs(4),
        "once the late survivor hears of the departure, both agree on the new host and hold \
         one world entity it owns, with its latest value",
        |sim| {
            let survivors = [quick, late];
            let net_id = world_values(&mut sim.apps[quick])[0].0;
            survivors
                .iter()
                .all(|i| sim.apps[*i].world().resource::<ConnectedPeers>().host() == Some(new_host))
                && world_values(&mut sim.apps[late])[..] == [(net_id, OwnerIs::Peer(new_host), 5)]
        },
    );
    println!("converged {took:?} after the 4 s mark");
    let blamed = &sim.apps[late].world().resource::<Blamed>().0;
    assert!(
        blamed.is_empty(),
        "nobody was dishonest, yet the late survivor reported {blamed:?}"
    );
}
