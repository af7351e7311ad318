//! An entity handed to a player that loses its connection before it claimed it, and never comes
//! back: when the resume grace runs out, the entity goes back to the peer that handed it over,
//! on every peer, rather than being despawned. What the player had already claimed is its own,
//! and goes with it.

use std::time::Duration;

use bevy::prelude::*;
use bevy_peersync::prelude::*;
use bevy_peersync::{LinkConditioner, SessionConfig};

use crate::support::sim::*;

/// Short, so that the tests run in seconds; well above the peer timeout (2 s).
const GRACE: Duration = Duration::from_secs(4);

fn setup(app: &mut App) {
    replicate_basics(app);
    note_rejections(app);
}

/// The entity with `health` in `app`, if there is one.
fn find(app: &mut App, health: u32) -> Option<Entity> {
    let world = app.world_mut();
    let mut query = world.query::<(Entity, &Health)>();
    query
        .iter(world)
        .find(|(_, h)| h.0 == health)
        .map(|(entity, _)| entity)
}

/// Three peers with a short resume grace: the giver (index 0) owns an entity with `Health(7)`
/// that every peer holds. Returns the simulation and the entity's net id.
fn room() -> (Sim, u64) {
    let mut sim = Sim::new(31, LinkConditioner::PERFECT, 0, setup);
    let session = SessionConfig {
        resume_grace: GRACE,
        ..SessionConfig::default()
    };
    for _ in 0..3 {
        sim.join_with_session(session.clone());
    }
    sim.connect_all();
    let entity = sim.apps[GIVER]
        .world_mut()
        .spawn((Replicated, Health(7)))
        .id();
    sim.run_until(
        Duration::from_secs(1),
        "every peer holds the entity",
        |sim| (0..3).all(|i| copies(&mut sim.apps[i], 7).len() == 1),
    );
    let net_id = sim.apps[GIVER].world().get::<NetId>(entity).unwrap().0;
    (sim, net_id)
}

const GIVER: usize = 0;
const TARGET: usize = 1;
const OBSERVER: usize = 2;

/// The giver hands its entity to the target; returns the target's id.
fn hand_to_target(sim: &mut Sim) -> PeerId {
    let target = local_id(&sim.apps[TARGET]);
    let entity = find(&mut sim.apps[GIVER], 7).unwrap();
    sim.apps[GIVER]
        .world_mut()
        .commands()
        .entity(entity)
        .transfer_ownership(target);
    target
}

fn assert_nobody_accused(sim: &Sim, peers: &[usize]) {
    for i in peers {
        let rejections = &sim.apps[*i].world().resource::<Rejections>().0;
        assert!(
            rejections.is_empty(),
            "peer {i} accused nobody (every step was honest), but reported {rejections:?}"
        );
    }
}

#[test]
fn an_entity_handed_to_a_player_that_never_comes_back_goes_back_to_its_giver() {
    let (mut sim, net_id) = room();
    let giver = local_id(&sim.apps[GIVER]);
    let target = hand_to_target(&mut sim);
    // The target hangs for good before it runs again: it never hears the hand-over, never
    // claims, and never comes back. Its links stay up: only its silence tells.
    sim.frozen = vec![TARGET];
    sim.run_until(
        Duration::from_secs(4),
        "the giver and the observer dropped the target and keep the entity, suspended",
        |sim| {
            copies(&mut sim.apps[GIVER], 7) == vec![(net_id, OwnerIs::Peer(target), true)]
                && copies(&mut sim.apps[OBSERVER], 7) == vec![(net_id, OwnerIs::Peer(giver), true)]
        },
    );
    let took = sim.run_until(
        GRACE + Duration::from_secs(3),
        "once the grace ran out, the entity is the giver's again on the giver and the observer, \
         not suspended",
        |sim| {
            copies(&mut sim.apps[GIVER], 7) == vec![(net_id, OwnerIs::Local, false)]
                && copies(&mut sim.apps[OBSERVER], 7) == vec![(net_id, OwnerIs::Peer(giver), false)]
        },
    );
    println!("the entity was the giver's again {took:?} after the target was dropped");
    // The giver sends it again as its owner.
    let entity = find(&mut sim.apps[GIVER], 7).unwrap();
    sim.apps[GIVER]
        .world_mut()
        .get_mut::<Health>(entity)
        .unwrap()
        .0 = 8;
    sim.run_until(
        Duration::from_secs(1),
        "the giver's change to the entity it got back reaches the observer",
        |sim| copies(&mut sim.apps[OBSERVER], 8) == vec![(net_id, OwnerIs::Peer(giver), false)],
    );
    assert_nobody_accused(&sim, &[GIVER, OBSERVER]);
}

#[test]
fn an_entity_the_player_claimed_before_it_dropped_goes_with_it() {
    let (mut sim, net_id) = room();
    let target = hand_to_target(&mut sim);
    sim.run_until(
        Duration::from_secs(1),
        "the target claimed the entity, and everyone knows",
        |sim| {
            copies(&mut sim.apps[TARGET], 7) == vec![(net_id, OwnerIs::Local, false)]
                && [GIVER, OBSERVER].iter().all(|i| {
                    copies(&mut sim.apps[*i], 7) == vec![(net_id, OwnerIs::Peer(target), false)]
                })
        },
    );
    sim.frozen = vec![TARGET];
    sim.run_until(
        Duration::from_secs(4) + GRACE,
        "once the grace ran out, the entity went with its owner, the target",
        |sim| {
            [GIVER, OBSERVER]
                .iter()
                .all(|i| copies(&mut sim.apps[*i], 7).is_empty())
        },
    );
    sim.run_for(Duration::from_secs(1));
    for i in [GIVER, OBSERVER] {
        assert!(
            copies(&mut sim.apps[i], 7).is_empty(),
            "peer {i} does not get back an entity that was the target's own"
        );
    }
    assert_nobody_accused(&sim, &[GIVER, OBSERVER]);
}

#[test]
fn an_entity_whose_giver_left_too_follows_the_rules_for_departed_owners() {
    let (mut sim, net_id) = room();
    let giver = local_id(&sim.apps[GIVER]);
    let target = hand_to_target(&mut sim);
    sim.frozen = vec![TARGET];
    sim.run_until(Duration::from_secs(1), "the giver handed it over", |sim| {
        copies(&mut sim.apps[GIVER], 7) == vec![(net_id, OwnerIs::Peer(target), false)]
    });
    sim.run_for(Duration::from_millis(200));
    // The giver leaves on purpose: the entity it gave is no longer its to take back.
    sim.apps[GIVER]
        .world_mut()
        .resource_mut::<PeerSocket>()
        .close();
    sim.run_until(
        Duration::from_secs(4),
        "the observer dropped both and keeps the entity, suspended, for the target",
        |sim| {
            let alone = sim.apps[OBSERVER]
                .world()
                .resource::<ConnectedPeers>()
                .is_empty();
            alone
                && copies(&mut sim.apps[OBSERVER], 7) == vec![(net_id, OwnerIs::Peer(giver), true)]
        },
    );
    sim.run_until(
        GRACE + Duration::from_secs(1),
        "once the grace ran out, the entity (not a world entity) is despawned",
        |sim| copies(&mut sim.apps[OBSERVER], 7).is_empty(),
    );
    assert_nobody_accused(&sim, &[OBSERVER]);
}
