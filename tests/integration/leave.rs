//! When an owner leaves, its entities are despawned everywhere, or taken over by the host when
//! marked so; world entities follow the host.

use std::time::Duration;

use crate::support::sim::*;
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;

fn three() -> Sim {
    let mut sim = Sim::new(
        51,
        LinkConditioner {
            latency: Duration::from_millis(20),
            ..LinkConditioner::PERFECT
        },
        3,
        replicate_basics,
    );
    sim.connect_all();
    sim
}

fn index_of(sim: &Sim, peer: PeerId) -> usize {
    sim.apps
        .iter()
        .position(|app| local_id(app) == peer)
        .unwrap()
}

fn owners(app: &mut App) -> Vec<(u64, PeerId)> {
    held(app).into_iter().map(|(id, h)| (id, h.owner)).collect()
}

#[test]
fn a_leavers_entities_are_despawned_or_handed_to_the_host() {
    let mut sim = three();
    // The leaver is not the host, so the host stays the same.
    let host = sim.apps[0]
        .world()
        .resource::<ConnectedPeers>()
        .host()
        .unwrap();
    let leaver = (0..3).find(|i| local_id(&sim.apps[*i]) != host).unwrap();
    let plain = sim.apps[leaver]
        .world_mut()
        .spawn((Replicated, Health(1)))
        .id();
    let kept = sim.apps[leaver]
        .world_mut()
        .spawn((Replicated, HandToHostOnLeave, Health(2)))
        .id();
    sim.run_until(Duration::from_secs(1), "everyone has both", |sim| {
        sim.apps.iter_mut().all(|app| held(app).len() == 2)
    });
    let plain_id = sim.apps[leaver].world().get::<NetId>(plain).unwrap().0;
    let kept_id = sim.apps[leaver].world().get::<NetId>(kept).unwrap().0;

    sim.apps[leaver]
        .world_mut()
        .resource_mut::<PeerSocket>()
        .close();
    let stayers: Vec<usize> = (0..3).filter(|i| *i != leaver).collect();
    sim.run_until(
        Duration::from_secs(2),
        "the plain entity is gone and the host owns the other",
        |sim| {
            stayers
                .iter()
                .all(|i| owners(&mut sim.apps[*i]) == vec![(kept_id, host)])
        },
    );
    for i in &stayers {
        assert!(!held(&mut sim.apps[*i]).contains_key(&plain_id));
        let health = held(&mut sim.apps[*i])[&kept_id].health.clone();
        assert_eq!(
            health,
            Some(Health(2)),
            "the handed-over entity keeps its state"
        );
    }
    // The host's changes to it reach the other stayer.
    let host_index = index_of(&sim, host);
    let other = *stayers.iter().find(|i| **i != host_index).unwrap();
    let world = sim.apps[host_index].world_mut();
    let entity = world
        .query::<(Entity, &NetId)>()
        .iter(world)
        .find(|(_, id)| id.0 == kept_id)
        .unwrap()
        .0;
    world.get_mut::<Health>(entity).unwrap().0 = 3;
    sim.run_until(
        Duration::from_secs(1),
        "the new owner's change arrives",
        |sim| held(&mut sim.apps[other])[&kept_id].health == Some(Health(3)),
    );
}

#[test]
fn world_entities_move_to_the_next_host_when_the_host_leaves() {
    let mut sim = three();
    let host = sim.apps[0]
        .world()
        .resource::<ConnectedPeers>()
        .host()
        .unwrap();
    let host_index = index_of(&sim, host);
    let world_entity = sim.apps[host_index]
        .world_mut()
        .spawn((Replicated, HostOwned, Health(9)))
        .id();
    sim.run_until(
        Duration::from_secs(1),
        "everyone has the world entity",
        |sim| sim.apps.iter_mut().all(|app| held(app).len() == 1),
    );
    let id = sim.apps[host_index]
        .world()
        .get::<NetId>(world_entity)
        .unwrap()
        .0;

    sim.apps[host_index]
        .world_mut()
        .resource_mut::<PeerSocket>()
        .close();
    let stayers: Vec<usize> = (0..3).filter(|i| *i != host_index).collect();
    let mut next_host = None;
    sim.run_until(
        Duration::from_secs(2),
        "the next host owns the world entity everywhere",
        |sim| {
            let hosts: Vec<_> = stayers
                .iter()
                .map(|i| sim.apps[*i].world().resource::<ConnectedPeers>().host())
                .collect();
            next_host = hosts[0];
            hosts.iter().all(|h| *h == next_host && *h != Some(host))
                && stayers
                    .iter()
                    .all(|i| owners(&mut sim.apps[*i]) == vec![(id, next_host.unwrap())])
        },
    );
}

#[test]
fn a_world_entity_spawned_before_the_room_settled_goes_to_the_host_it_settles_on() {
    // Peers that meet before settling let the lowest id among them found the session. Ids are
    // random: keep adding peers until one is lower than the first, whose entity moves to it.
    let mut sim = Sim::new(
        52,
        LinkConditioner {
            latency: Duration::from_millis(20),
            ..LinkConditioner::PERFECT
        },
        1,
        replicate_basics,
    );
    sim.run_for(Duration::from_millis(100));
    sim.apps[0]
        .world_mut()
        .spawn((Replicated, HostOwned, Health(5)));
    let first = local_id(&sim.apps[0]);
    let newcomer = loop {
        let index = sim.join();
        sim.connect_all();
        if local_id(&sim.apps[index]) < first {
            break index;
        }
    };
    let new_host = local_id(&sim.apps[newcomer]);
    sim.run_until(
        Duration::from_secs(2),
        "the lower newcomer founded the session and owns the world entity everywhere",
        |sim| {
            sim.apps.iter_mut().all(|app| {
                let mine = local_id(app);
                let entries = owners(app);
                entries.len() == 1
                    && entries[0].1 == new_host
                    && (mine != new_host || held(app).values().all(|h| h.owner == mine))
            })
        },
    );
}

/// A game that despawns world entities the moment it owns them (as one might to drop a copy it
/// does not want), possibly in the very frame it took them over.
fn despawn_world_entities_as_soon_as_ours(
    mut commands: Commands,
    taken: Query<(Entity, Ref<Owner>), With<HostOwned>>,
) {
    for (entity, owner) in &taken {
        if !owner.is_changed() {
            continue;
        }
        if owner.is_local() {
            commands.entity(entity).despawn();
        }
    }
}

#[test]
fn a_world_entity_the_new_host_despawns_on_taking_it_over_is_gone_everywhere() {
    let mut sim = Sim::new(
        53,
        LinkConditioner {
            latency: Duration::from_millis(20),
            ..LinkConditioner::PERFECT
        },
        3,
        replicate_basics,
    );
    sim.connect_all();
    let host = sim.agreed_host().expect("the three agree on a host");
    let host_index = index_of(&sim, host);
    for (i, app) in sim.apps.iter_mut().enumerate() {
        if i != host_index {
            app.add_systems(Update, despawn_world_entities_as_soon_as_ours);
        }
    }
    sim.apps[host_index]
        .world_mut()
        .spawn((Replicated, HostOwned, Health(5)));
    sim.run_until(
        Duration::from_secs(2),
        "every peer holds the world entity",
        |sim| sim.apps.iter_mut().all(|app| held(app).len() == 1),
    );
    // The host leaves: the next host takes the entity over and despawns it in that frame.
    sim.apps[host_index]
        .world_mut()
        .resource_mut::<PeerSocket>()
        .close();
    let stayers: Vec<usize> = (0..3).filter(|i| *i != host_index).collect();
    sim.run_until(
        Duration::from_secs(3),
        "the new host took the world entity over and despawned it: no peer may keep a copy",
        |sim| stayers.iter().all(|i| held(&mut sim.apps[*i]).is_empty()),
    );
}
