//! `Target::Host` reaches whoever is host: another peer, this peer itself (no separate path for
//! the host), and the next host once the host leaves; `HostChanged` says when it changed.

use std::time::Duration;

use crate::support::sim::*;
use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Request(u32);

#[derive(Resource, Default)]
struct Got(Vec<(PeerId, u32)>);

#[derive(Resource, Default)]
struct Hosts(Vec<Option<PeerId>>);

fn setup(app: &mut App) {
    replicate_basics(app);
    app.add_peer_message::<Request>(Channel::Reliable)
        .init_resource::<Got>()
        .init_resource::<Hosts>()
        .add_observer(|changed: On<HostChanged>, mut hosts: ResMut<Hosts>| {
            hosts.0.push(changed.host);
        })
        .add_systems(
            Update,
            |mut requests: MessageReader<FromPeer<Request>>, mut got: ResMut<Got>| {
                got.0.extend(requests.read().map(|r| (r.peer, r.message.0)));
            },
        );
}

fn ask_host(app: &mut App, n: u32) {
    app.world_mut()
        .run_system_once(move |mut requests: PeerMessageWriter<Request>| {
            requests.send(Target::Host, &Request(n)).unwrap();
        })
        .unwrap();
}

fn host_index(sim: &Sim) -> usize {
    let host = sim.apps[0]
        .world()
        .resource::<ConnectedPeers>()
        .host()
        .unwrap();
    sim.apps
        .iter()
        .position(|app| local_id(app) == host)
        .unwrap()
}

fn got(app: &App) -> Vec<(PeerId, u32)> {
    app.world().resource::<Got>().0.clone()
}

#[test]
fn messages_to_the_host_reach_it_from_anyone_including_itself_and_follow_a_new_host() {
    let mut sim = Sim::new(81, LinkConditioner::PERFECT, 3, setup);
    sim.connect_all();
    let host = host_index(&sim);
    let other = (host + 1) % 3;
    let third = (host + 2) % 3;

    ask_host(&mut sim.apps[other], 1);
    ask_host(&mut sim.apps[host], 2);
    sim.run_until(
        Duration::from_secs(1),
        "the host should get both requests",
        |sim| got(&sim.apps[host]).len() == 2,
    );
    let host_id = local_id(&sim.apps[host]);
    let other_id = local_id(&sim.apps[other]);
    let mut requests = got(&sim.apps[host]);
    requests.sort_by_key(|(_, n)| *n);
    assert_eq!(
        requests,
        vec![(other_id, 1), (host_id, 2)],
        "one from the other peer, one from the host itself under its own id"
    );
    assert!(
        got(&sim.apps[other]).is_empty() && got(&sim.apps[third]).is_empty(),
        "nobody but the host gets them"
    );

    sim.apps[host]
        .world_mut()
        .resource_mut::<PeerSocket>()
        .close();
    sim.run_until(
        Duration::from_secs(2),
        "the two left should agree on a new host",
        |sim| {
            [other, third].iter().all(|&i| {
                let peers = sim.apps[i].world().resource::<ConnectedPeers>();
                peers.len() == 1 && peers.host() != Some(host_id)
            })
        },
    );
    let new_host = sim.apps[other]
        .world()
        .resource::<ConnectedPeers>()
        .host()
        .unwrap();
    let hosts = &sim.apps[other].world().resource::<Hosts>().0;
    assert_eq!(
        hosts.last(),
        Some(&Some(new_host)),
        "HostChanged should name the new host last: {hosts:?}"
    );
    ask_host(&mut sim.apps[other], 3);
    ask_host(&mut sim.apps[third], 4);
    let new_host_index = if local_id(&sim.apps[other]) == new_host {
        other
    } else {
        third
    };
    sim.run_until(
        Duration::from_secs(1),
        "the new host should get both later requests",
        |sim| {
            got(&sim.apps[new_host_index])
                .iter()
                .filter(|(_, n)| *n >= 3)
                .count()
                == 2
        },
    );
}
