//! A player that loses its connection without a goodbye comes back as itself: its entities wait
//! for it (marked `Suspended`) and are its own again under its new id, with the same net ids. A
//! player that leaves on purpose is gone at once; one that does not come back, after the grace.

use std::time::Duration;

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_peersync::prelude::*;
use bevy_peersync::{LinkConditioner, MemoryNetwork, SessionConfig};

use crate::support::sim::*;

/// The resumes an app saw, as (previous id, new id).
#[derive(Resource, Default)]
struct Resumes(Vec<(PeerId, PeerId)>);

fn setup(app: &mut App) {
    replicate_basics(app);
    note_rejections(app);
    app.init_resource::<Resumes>().add_observer(
        |resumed: On<PeerResumed>, mut seen: ResMut<Resumes>| {
            seen.0.push((resumed.previous, resumed.peer));
        },
    );
}

/// The players `app` shows as owners of the entities with `health`.
fn owning_players(app: &mut App, health: u32) -> Vec<Option<PlayerId>> {
    let world = app.world_mut();
    let mut query = world.query::<(&Owner, &Health)>();
    query
        .iter(world)
        .filter(|(_, h)| h.0 == health)
        .map(|(owner, _)| owner.player())
        .collect()
}

/// The id `app` plays under now, if it is not `old` (it rejoined the room).
fn new_id(app: &App, old: PeerId) -> Option<PeerId> {
    app.world()
        .resource::<ConnectedPeers>()
        .local_id()
        .filter(|id| *id != old)
}

/// The first frame of an app that was stopped for `stopped`: it sees the gap, so it rejoins.
fn wake(app: &mut App, stopped: Duration) {
    app.insert_resource(TimeUpdateStrategy::ManualDuration(stopped));
    app.update();
    app.insert_resource(TimeUpdateStrategy::ManualDuration(DT));
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
    let the_player = sim.apps[player]
        .world()
        .resource::<ConnectedPeers>()
        .local_player();
    for i in &others {
        let held = copies(&mut sim.apps[*i], 7);
        assert_eq!(
            held,
            vec![(net_id, OwnerIs::Peer(old_id), true)],
            "peer {i} keeps the stopped player's entity, marked Suspended"
        );
        assert_eq!(
            owning_players(&mut sim.apps[*i], 7),
            vec![the_player],
            "peer {i} shows the stopped player as its entity's owner"
        );
    }
    // It runs again: its first frame sees the 6 s gap, so it rejoins under a new id.
    wake(&mut sim.apps[player], Duration::from_secs(6));
    let took = sim.run_until(
        Duration::from_secs(3),
        "the player is back under a new id and owns its entity again everywhere, unsuspended",
        |sim| {
            new_id(&sim.apps[player], old_id).is_some_and(|new_id| {
                others.iter().all(|i| {
                    copies(&mut sim.apps[*i], 7) == vec![(net_id, OwnerIs::Peer(new_id), false)]
                })
            })
        },
    );
    let new_id = local_id(&sim.apps[player]);
    println!("resumed {took:?} after the stopped player ran again");
    for i in &others {
        assert_eq!(
            owning_players(&mut sim.apps[*i], 7),
            vec![the_player],
            "peer {i} shows the same player as the owner under its new connection"
        );
    }
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
fn what_was_despawned_while_a_player_was_stopped_is_gone_when_it_is_back() {
    let (mut sim, player, _) = room();
    // The third peer (neither the host nor the player) owns an entity too.
    let third = (player + 1) % 3;
    let doomed = sim.apps[third]
        .world_mut()
        .spawn((Replicated, Health(9)))
        .id();
    sim.run_until(
        Duration::from_secs(1),
        "every peer holds the third peer's entity",
        |sim| (0..3).all(|i| copies(&mut sim.apps[i], 9).len() == 1),
    );
    let old_id = local_id(&sim.apps[player]);
    let third_id = local_id(&sim.apps[third]);
    // The player's network drops (nothing gets through, nobody is told) and it stops.
    for other in [0, 1, 2].into_iter().filter(|i| *i != player) {
        sim.net.silence(old_id, local_id(&sim.apps[other]));
    }
    sim.frozen = vec![player];
    sim.run_for(Duration::from_millis(500));
    // Despawned while the player hears nothing.
    sim.apps[third].world_mut().entity_mut(doomed).despawn();
    sim.run_for(Duration::from_millis(5500));
    sim.frozen.clear();
    assert!(
        sim.net.peers().contains(&third_id),
        "the third peer is still in the room"
    );
    wake(&mut sim.apps[player], Duration::from_secs(6));
    sim.run_until(
        Duration::from_secs(3),
        "the player is back as itself, holds the host's world entity, and no longer the entity \
         despawned while it was stopped",
        |sim| {
            new_id(&sim.apps[player], old_id).is_some()
                && matches!(copies(&mut sim.apps[player], 100)[..], [(_, _, false)])
                && copies(&mut sim.apps[player], 9).is_empty()
        },
    );
    sim.run_for(Duration::from_secs(1));
    assert!(
        copies(&mut sim.apps[player], 9).is_empty(),
        "the despawned entity does not come back"
    );
    assert_eq!(
        copies(&mut sim.apps[player], 7).len(),
        1,
        "the player keeps its own entity"
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

/// Cuts an app off from the others (both ways, links up: only the silence tells) as soon as it
/// has taken over the entity with `Health(7)`: in the frame it did, before its claim goes out.
#[derive(Resource)]
struct DropNetworkOnTakeOver {
    net: MemoryNetwork,
    me: PeerId,
    others: Vec<PeerId>,
}

fn drop_network_on_take_over(
    cut: Option<Res<DropNetworkOnTakeOver>>,
    taken: Query<(&Owner, &Health)>,
    mut commands: Commands,
) {
    let Some(cut) = cut else { return };
    if taken
        .iter()
        .any(|(owner, health)| owner.is_local() && health.0 == 7)
    {
        for other in &cut.others {
            cut.net.silence(cut.me, *other);
        }
        commands.remove_resource::<DropNetworkOnTakeOver>();
    }
}

/// An entity is handed to a player whose network then drops (before it heard the hand-over, or
/// after it took the entity over but before its claim left); the player notices it is cut off,
/// rejoins under a new id and resumes: it must end up owning the entity, once, everywhere, with
/// nobody accused of anything. Before the fix the hand-over stayed addressed to the old id for
/// good: the entity was frozen, `Suspended`, on every peer.
fn hand_over_to_a_player_whose_network_drops(took_it_over_first: bool) {
    let (mut sim, giver, entity) = room();
    let net_id = sim.apps[giver].world().get::<NetId>(entity).unwrap().0;
    let host = sim.agreed_host().unwrap();
    let receiver = (0..3)
        .find(|i| *i != giver && local_id(&sim.apps[*i]) != host)
        .unwrap();
    let old_id = local_id(&sim.apps[receiver]);
    let others: Vec<PeerId> = (0..3)
        .filter(|i| *i != receiver)
        .map(|i| local_id(&sim.apps[i]))
        .collect();
    if took_it_over_first {
        sim.apps[receiver]
            .insert_resource(DropNetworkOnTakeOver {
                net: sim.net.clone(),
                me: old_id,
                others,
            })
            .add_systems(Update, drop_network_on_take_over);
    } else {
        for other in others {
            sim.net.silence(old_id, other);
        }
    }
    sim.apps[giver]
        .world_mut()
        .commands()
        .entity(entity)
        .transfer_ownership(old_id);
    let took = sim.run_until(
        Duration::from_secs(8),
        "the receiver is back under a new id and owns the entity everywhere, once, unsuspended",
        |sim| {
            let Some(new_id) = new_id(&sim.apps[receiver], old_id) else {
                return false;
            };
            (0..3).all(|i| {
                let owner = if i == receiver {
                    OwnerIs::Local
                } else {
                    OwnerIs::Peer(new_id)
                };
                copies(&mut sim.apps[i], 7) == vec![(net_id, owner, false)]
            })
        },
    );
    println!("the receiver owned the entity everywhere {took:?} after the hand-over");
    for (i, app) in sim.apps.iter().enumerate() {
        let rejections = &app.world().resource::<Rejections>().0;
        assert!(
            rejections.is_empty(),
            "peer {i} accused nobody (every step was honest), but reported {rejections:?}"
        );
    }
    let held = sim.apps[receiver]
        .world_mut()
        .query::<(Entity, &Health)>()
        .iter(sim.apps[receiver].world())
        .find(|(_, health)| health.0 == 7)
        .map(|(entity, _)| entity)
        .unwrap();
    sim.apps[receiver]
        .world_mut()
        .get_mut::<Health>(held)
        .unwrap()
        .0 = 8;
    sim.run_until(
        Duration::from_secs(1),
        "the new owner's change reaches everyone",
        |sim| (0..3).all(|i| copies(&mut sim.apps[i], 8).len() == 1),
    );
}

#[test]
fn an_entity_handed_to_a_player_that_dropped_before_hearing_it_reaches_it_when_it_is_back() {
    hand_over_to_a_player_whose_network_drops(false);
}

#[test]
fn an_entity_taken_over_by_a_player_that_dropped_before_claiming_it_is_its_when_it_is_back() {
    hand_over_to_a_player_whose_network_drops(true);
}

/// A stopped player whose first frame back comes before the others dropped it (their peer
/// timeout is longer than the stop): it rejoins, and the others learn of the new id in the same
/// frame as they drop the old one. Its entity must be kept (same entity, so references to it
/// hold), not despawned and spawned again.
#[test]
fn a_player_back_before_the_others_dropped_it_keeps_the_same_entities() {
    let mut sim = Sim::new(23, LinkConditioner::PERFECT, 0, setup);
    let patient = SessionConfig {
        peer_timeout: Duration::from_secs(20),
        ..SessionConfig::default()
    };
    for _ in 0..2 {
        sim.join_with_session(patient.clone());
    }
    let player = sim.join();
    sim.connect_all();
    for patient_peer in 0..2 {
        // Their WebRTC stacks do not notice the stopped player's socket closing either.
        let observer = local_id(&sim.apps[patient_peer]);
        sim.net.delay_departures(observer, Duration::from_secs(20));
    }
    let entity = sim.apps[player]
        .world_mut()
        .spawn((Replicated, Health(7)))
        .id();
    sim.run_until(Duration::from_secs(1), "everyone holds the entity", |sim| {
        (0..3).all(|i| copies(&mut sim.apps[i], 7).len() == 1)
    });
    let net_id = sim.apps[player].world().get::<NetId>(entity).unwrap().0;
    let old_id = local_id(&sim.apps[player]);
    let find = |app: &mut App| {
        let world = app.world_mut();
        let mut query = world.query::<(Entity, &NetId)>();
        query
            .iter(world)
            .find(|(_, id)| id.0 == net_id)
            .map(|(entity, _)| entity)
    };
    let before: Vec<Option<Entity>> = (0..2).map(|i| find(&mut sim.apps[i])).collect();

    // Stopped 4 s: past its own timeout (2 s), so it rejoins; within the others' (20 s).
    sim.frozen = vec![player];
    sim.run_for(Duration::from_secs(4));
    sim.frozen.clear();
    wake(&mut sim.apps[player], Duration::from_secs(4));
    sim.run_until(
        Duration::from_secs(3),
        "the player is back under a new id and owns its entity everywhere",
        |sim| {
            new_id(&sim.apps[player], old_id).is_some_and(|new_id| {
                (0..2).all(|i| {
                    copies(&mut sim.apps[i], 7) == vec![(net_id, OwnerIs::Peer(new_id), false)]
                })
            })
        },
    );
    let after: Vec<Option<Entity>> = (0..2).map(|i| find(&mut sim.apps[i])).collect();
    assert_eq!(
        after, before,
        "the others kept the very same entity (references to it hold), not a respawned copy"
    );
}
