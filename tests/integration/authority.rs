//! Only an entity's owner changes it: a peer that claims someone else's entity is rejected and
//! reported; an owner can hand an entity over, with its latest values, and then only the new
//! owner counts.

use std::time::Duration;

use crate::support::hostile::*;
use crate::support::sim::*;
use bevy::prelude::*;
use bevy_peersync::fuzzing::{KIND_UPDATE, forged_spawn};
use bevy_peersync::prelude::*;
use bevy_peersync::{InputError, LinkConditioner};

#[derive(Resource, Default)]
struct Rejections(Vec<(PeerId, InputError)>);

fn setup(app: &mut App) {
    replicate_basics(app);
    app.init_resource::<Rejections>()
        .insert_resource(bevy_peersync::replication::ReplicationConfig {
            handover_timeout: Duration::from_millis(500),
            ..Default::default()
        })
        .add_observer(
            |event: On<PeerInputRejected>, mut seen: ResMut<Rejections>| {
                seen.0.push((event.peer, event.error.clone()));
            },
        );
}

fn entity_with(app: &mut App, net_id: u64) -> Entity {
    let world = app.world_mut();
    let mut query = world.query::<(Entity, &NetId)>();
    query
        .iter(world)
        .find(|(_, id)| id.0 == net_id)
        .expect("the entity is here")
        .0
}

#[test]
fn a_claim_on_someone_elses_entity_is_rejected_and_the_owner_keeps_it() {
    let mut sim = Sim::new(21, LinkConditioner::PERFECT, 2, setup);
    // A third peer whose transport lets the test forge its messages.
    let inject = join_hostile(&mut sim, setup);
    sim.connect_all();

    let owner = local_id(&sim.apps[0]);
    let attacker = local_id(&sim.apps[2]);
    let entity = sim.apps[0]
        .world_mut()
        .spawn((Replicated, Transform::default(), Health(100)))
        .id();
    sim.run_until(Duration::from_secs(1), "everyone has the entity", |sim| {
        sim.apps.iter_mut().all(|app| held(app).len() == 1)
    });
    let net_id = sim.apps[0].world().get::<NetId>(entity).unwrap().0;

    // The attacker announces the entity as its own, with health 0.
    let mut health = Vec::new();
    bevy_peersync::replication::codec::ComponentCodec::<Health>::encode(
        &bevy_peersync::replication::codec::SerdeCodec,
        &Health(0),
        &mut health,
    );
    let forged = forged_spawn(1_000_000, 1, net_id, &[(1, &health)]);
    let victim = local_id(&sim.apps[1]);
    inject
        .lock()
        .unwrap()
        .push(reliable_message(victim, KIND_UPDATE, &forged));

    sim.run_until(Duration::from_secs(2), "the claim is rejected", |sim| {
        !sim.apps[1].world().resource::<Rejections>().0.is_empty()
    });
    let rejections = &sim.apps[1].world().resource::<Rejections>().0;
    assert!(
        matches!(&rejections[..], [(peer, InputError::Unauthorized(reason))] if *peer == attacker && reason.contains("without its owner")),
        "the attacker is reported for an unauthorized claim: {rejections:?}"
    );
    let replica = entity_with(&mut sim.apps[1], net_id);
    assert_eq!(
        sim.apps[1]
            .world()
            .get::<Owner>(replica)
            .and_then(Owner::peer),
        Some(owner),
        "the owner keeps it"
    );
    assert_eq!(
        sim.apps[1].world().get::<Health>(replica),
        Some(&Health(100)),
        "the forged value was never applied"
    );

    sim.apps[0].world_mut().get_mut::<Health>(entity).unwrap().0 = 42;
    sim.run_until(
        Duration::from_secs(1),
        "the owner's changes still apply",
        |sim| sim.apps[1].world().get::<Health>(replica) == Some(&Health(42)),
    );
}

#[test]
fn an_owner_hands_an_entity_over_and_only_the_new_owner_counts() {
    let mut sim = Sim::new(
        22,
        LinkConditioner {
            latency: Duration::from_millis(30),
            ..LinkConditioner::PERFECT
        },
        3,
        setup,
    );
    sim.connect_all();
    let entity = sim.apps[0]
        .world_mut()
        .spawn((Replicated, Transform::default(), Health(1)))
        .id();
    sim.run_until(Duration::from_secs(1), "everyone has the entity", |sim| {
        sim.apps.iter_mut().all(|app| held(app).len() == 1)
    });
    let net_id = sim.apps[0].world().get::<NetId>(entity).unwrap().0;
    let new_owner = local_id(&sim.apps[1]);

    // A last change in the same frame as the hand-over: it must reach the new owner.
    sim.apps[0].world_mut().get_mut::<Health>(entity).unwrap().0 = 9;
    sim.apps[0]
        .world_mut()
        .commands()
        .entity(entity)
        .transfer_ownership(new_owner);
    sim.run_until(
        Duration::from_secs(2),
        "everyone agrees on the new owner, and holds the value the old owner set last",
        |sim| {
            let b = entity_with(&mut sim.apps[1], net_id);
            let c = entity_with(&mut sim.apps[2], net_id);
            sim.apps[0]
                .world()
                .get::<Owner>(entity)
                .and_then(Owner::peer)
                == Some(new_owner)
                && sim.apps[1].world().get::<Owner>(b) == Some(&Owner::Local)
                && sim.apps[2].world().get::<Owner>(c).and_then(Owner::peer) == Some(new_owner)
                && sim.apps[1].world().get::<Health>(b) == Some(&Health(9))
                && sim.apps[2].world().get::<Health>(c) == Some(&Health(9))
        },
    );

    // The old owner's writes are local only now; the new owner's reach everyone.
    sim.apps[0].world_mut().get_mut::<Health>(entity).unwrap().0 = 666;
    let b = entity_with(&mut sim.apps[1], net_id);
    sim.apps[1].world_mut().get_mut::<Health>(b).unwrap().0 = 2;
    sim.run_until(
        Duration::from_secs(1),
        "the new owner's value is everywhere",
        |sim| {
            let c = entity_with(&mut sim.apps[2], net_id);
            sim.apps[0].world().get::<Health>(entity) == Some(&Health(2))
                && sim.apps[2].world().get::<Health>(c) == Some(&Health(2))
        },
    );
    assert!(
        sim.apps
            .iter()
            .all(|app| app.world().resource::<Rejections>().0.is_empty()),
        "a proper hand-over is not an error"
    );
}
