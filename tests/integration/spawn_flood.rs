//! A peer that spawns entities without end cannot make another hold more than
//! `max_entities_per_peer` of them: the rest are dropped and reported, naming it, and the honest
//! owners' entities still arrive.

use std::time::Duration;

use crate::support::hostile::*;
use crate::support::sim::*;
use bevy::prelude::*;
use bevy_peersync::fuzzing::{KIND_UPDATE, forged_hand_over, forged_spawn};
use bevy_peersync::prelude::*;
use bevy_peersync::replication::ReplicationConfig;
use bevy_peersync::{InputError, LinkConditioner};

const LIMIT: usize = 50;

#[derive(Resource, Default)]
struct Rejections(Vec<(PeerId, InputError)>);

fn setup(app: &mut App) {
    replicate_basics(app);
    app.init_resource::<Rejections>()
        .insert_resource(ReplicationConfig {
            max_entities_per_peer: LIMIT,
            ..Default::default()
        })
        .add_observer(
            |event: On<PeerInputRejected>, mut seen: ResMut<Rejections>| {
                seen.0.push((event.peer, event.error.clone()));
            },
        );
}

fn over_limit(app: &mut App, peer: PeerId) -> usize {
    let seen = &app.world().resource::<Rejections>().0;
    seen.iter()
        .filter(|(from, error)| *from == peer && matches!(error, InputError::OverLimit(_)))
        .count()
}

fn reused_wire(app: &mut App, peer: PeerId) -> usize {
    let seen = &app.world().resource::<Rejections>().0;
    seen.iter()
        .filter(|(from, error)| {
            *from == peer
                && matches!(error, InputError::Unauthorized(reason) if reason.contains("second entity"))
        })
        .count()
}

fn handed_to_nobody(app: &mut App, peer: PeerId) -> usize {
    let seen = &app.world().resource::<Rejections>().0;
    seen.iter()
        .filter(|(from, error)| {
            *from == peer
                && matches!(error, InputError::Unauthorized(reason) if reason.contains("not in the room"))
        })
        .count()
}

fn owned_by(app: &mut App, peer: PeerId) -> usize {
    let world = app.world_mut();
    let mut query = world.query::<&Owner>();
    query
        .iter(world)
        .filter(|owner| owner.peer() == Some(peer))
        .count()
}

#[test]
fn a_spawn_flood_stops_at_the_per_peer_limit_and_is_reported() {
    let mut sim = Sim::new(61, LinkConditioner::PERFECT, 2, setup);
    let inject = join_hostile(&mut sim, setup);
    sim.connect_all();
    let attacker = local_id(&sim.apps[2]);
    let victim = local_id(&sim.apps[1]);

    let flood = 4 * LIMIT as u32;
    for wire in 1..=flood {
        let spawn = forged_spawn(1_000 + wire, wire, 0x1000_0000_0000 + u64::from(wire), &[]);
        inject
            .lock()
            .unwrap()
            .push(reliable_message(victim, KIND_UPDATE, &spawn));
    }
    sim.run_until(
        Duration::from_secs(2),
        "the victim should report the attacker for going over the limit",
        |sim| over_limit(&mut sim.apps[1], attacker) > 0,
    );
    sim.run_for(Duration::from_millis(500));
    let held = owned_by(&mut sim.apps[1], attacker);
    assert_eq!(
        held, LIMIT,
        "the victim should hold exactly the first {LIMIT} of the attacker's {flood} entities"
    );
    assert_eq!(
        over_limit(&mut sim.apps[1], attacker),
        flood as usize - LIMIT,
        "every dropped spawn should be reported"
    );

    // The same wire number again and again, each time with a new net id: a second entity under
    // a number that names one already would escape the count.
    for n in 1..=u64::from(flood) {
        let spawn = forged_spawn(10_000, 1, 0x2000_0000_0000 + n, &[]);
        inject
            .lock()
            .unwrap()
            .push(reliable_message(victim, KIND_UPDATE, &spawn));
    }
    sim.run_until(
        Duration::from_secs(2),
        "every reuse of a wire number should be refused",
        |sim| reused_wire(&mut sim.apps[1], attacker) == flood as usize,
    );
    assert_eq!(
        owned_by(&mut sim.apps[1], attacker),
        LIMIT,
        "reusing a wire number should not add entities"
    );

    // Handing everything to a peer that is not in the room, to make room for more: refused,
    // so the entities still count against the attacker and no new spawn gets in.
    let nobody = PeerId(0xdead_beef);
    for wire in 1..=LIMIT as u32 {
        let hand_over = forged_hand_over(20_000 + wire, wire, nobody);
        inject
            .lock()
            .unwrap()
            .push(reliable_message(victim, KIND_UPDATE, &hand_over));
    }
    let spawn = forged_spawn(30_000, 9_999, 0x3000_0000_0000, &[]);
    inject
        .lock()
        .unwrap()
        .push(reliable_message(victim, KIND_UPDATE, &spawn));
    sim.run_until(
        Duration::from_secs(2),
        "every hand-over to a peer outside the room should be refused",
        |sim| handed_to_nobody(&mut sim.apps[1], attacker) == LIMIT,
    );
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        owned_by(&mut sim.apps[1], attacker),
        LIMIT,
        "refused hand-overs leave the entities the attacker's, and the spawn after them is over the limit"
    );

    let honest = local_id(&sim.apps[0]);
    sim.apps[0].world_mut().spawn((Replicated, Health(7)));
    sim.run_until(
        Duration::from_secs(2),
        "an honest owner's entity should still arrive at the victim",
        |sim| owned_by(&mut sim.apps[1], honest) == 1,
    );
}
