//! Differences from acknowledged values (issue 13): moving transforms cost a third fewer bytes
//! when sent as differences, every replica is still exactly the owner's value (as quantized)
//! under loss, reordering and duplication, a receiver that missed many values catches up and
//! gets differences again, and a receiver that lacks a value a difference is from asks for it
//! whole instead of blaming the owner.
//!
//! The byte figures in BENCHMARKS.md ("Differences") are printed by these tests:
//!
//! ```sh
//! cargo test --test integration deltas -- --nocapture --test-threads=1
//! ```

use std::time::Duration;

use crate::support::hostile::{join_hostile, put_varint, reliable_message};
use crate::support::sim::*;
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::{PeerReplicationStats, ReplicationConfig, ReplicationStats};

/// Entities the owner moves every frame.
const ENTITIES: u32 = 100;

/// On the owner's entities: moved every frame while the script runs.
#[derive(Component)]
struct Moving(u32);

#[derive(Resource)]
struct Script {
    frame: u32,
    running: bool,
}

fn setup_with(app: &mut App, deltas: bool) {
    app.insert_resource(ReplicationConfig {
        bandwidth_budget: None,
        deltas,
        ..Default::default()
    });
    replicate_basics(app);
    app.insert_resource(Script {
        frame: 0,
        running: true,
    })
    .add_systems(Update, play);
}

/// How an app of the test is set up.
type Setup = fn(&mut App);

fn with_differences(app: &mut App) {
    setup_with(app, true);
}

fn whole_values(app: &mut App) {
    setup_with(app, false);
}

/// The bench's movement (`benches/replication.rs`): every entity moves and turns every frame.
fn play(mut script: ResMut<Script>, mut moving: Query<(&Moving, &mut Transform)>) {
    if !script.running {
        return;
    }
    script.frame += 1;
    let t = script.frame as f32 * 0.016;
    for (index, mut transform) in &mut moving {
        let phase = index.0 as f32 * 0.01;
        transform.translation = Vec3::new((t + phase).sin() * 50.0, (t * 0.5).cos() * 20.0, phase);
        transform.rotation = Quat::from_rotation_y(t + phase);
    }
}

/// Two connected peers, the first owning [`ENTITIES`] moving entities.
fn room(seed: u64, conditioner: LinkConditioner, setup: Setup) -> Sim {
    let mut sim = Sim::new(seed, conditioner, 2, setup);
    sim.connect_all();
    for index in 0..ENTITIES {
        sim.apps[0]
            .world_mut()
            .spawn((Replicated, Moving(index), Transform::default()));
    }
    sim
}

/// Stops the movement and waits until the receiver holds exactly the owner's values.
fn stop_and_converge(sim: &mut Sim, what: &str) -> Duration {
    for app in &mut sim.apps {
        app.world_mut().resource_mut::<Script>().running = false;
    }
    sim.run_until(Duration::from_secs(2), what, |sim| converged(&mut sim.apps))
}

/// The owner's figures for the receiver.
fn owner_stats(sim: &Sim) -> PeerReplicationStats {
    let receiver = local_id(&sim.apps[1]);
    *sim.apps[0]
        .world()
        .resource::<ReplicationStats>()
        .peer(receiver)
        .expect("the owner keeps figures for the receiver")
}

/// Bytes per second the owner sent the receiver over the last second, every header included.
fn upload(sim: &mut Sim) -> f32 {
    let world = sim.apps[0].world_mut();
    let mut stats = world.query::<&PeerStats>();
    stats.iter(world).map(|s| s.sent_bytes_per_sec).sum()
}

#[test]
fn moving_transforms_cost_a_third_fewer_bytes_as_differences() {
    let link = LinkConditioner {
        latency: Duration::from_millis(10),
        ..LinkConditioner::PERFECT
    };
    let mut uploads = Vec::new();
    for (label, setup) in [
        ("whole values", whole_values as Setup),
        ("differences", with_differences),
    ] {
        let mut sim = room(1, link, setup);
        sim.run_for(Duration::from_secs(3));
        let upload = upload(&mut sim);
        let per_value = upload / 60.0 / ENTITIES as f32;
        println!(
            "{label}: {upload:.0} B/s to the receiver, {per_value:.2} B per moving transform per tick"
        );
        let stats = owner_stats(&sim);
        stop_and_converge(
            &mut sim,
            "the receiver holds exactly the owner's transforms",
        );
        uploads.push((upload, stats));
    }
    let [(whole, whole_stats), (differences, stats)] = uploads[..] else {
        unreachable!()
    };
    assert_eq!(
        whole_stats.differences, 0,
        "with differences off, every value goes whole"
    );
    assert!(
        stats.differences > u64::from(ENTITIES) * 60,
        "with differences on, most values go as differences: {stats:?}"
    );
    assert_eq!(
        stats.refused_differences, 0,
        "a healthy receiver keeps every baseline"
    );
    assert!(
        differences < whole * 0.7,
        "differences take {differences:.0} B/s, whole values {whole:.0} B/s: expected under 70 %"
    );
}

/// Loss, reordering and duplication at a latency low enough for acknowledgements to come back
/// while the receiver still keeps the values they acknowledge.
fn bad_network(seed: u64) {
    let link = LinkConditioner {
        loss: 0.3,
        latency: Duration::from_millis(30),
        jitter: Duration::from_millis(20),
        duplicate: 0.1,
        reorder: 0.2,
    };
    let mut sim = room(seed, link, with_differences);
    sim.run_for(Duration::from_secs(3));
    let took = stop_and_converge(
        &mut sim,
        "after the last change, the receiver holds exactly the owner's transforms",
    );
    let stats = owner_stats(&sim);
    println!("seed {seed}: converged {took:?} after the last change; {stats:?}");
    assert!(
        stats.differences > u64::from(ENTITIES) * 30,
        "differences went out despite the losses: {stats:?}"
    );
}

#[test]
fn replicas_stay_exact_under_a_bad_network_seed_1() {
    bad_network(1);
}

#[test]
fn replicas_stay_exact_under_a_bad_network_seed_2() {
    bad_network(2);
}

#[test]
fn a_receiver_that_missed_many_values_catches_up_and_gets_differences_again() {
    let mut sim = room(3, LinkConditioner::PERFECT, with_differences);
    sim.run_for(Duration::from_secs(1));
    // A second in which nothing reaches the receiver (short of the peer timeout): every
    // baseline it acknowledged falls more than a receiver keeps behind what was sent.
    let (owner, receiver) = (local_id(&sim.apps[0]), local_id(&sim.apps[1]));
    let blackout = LinkConditioner {
        loss: 1.0,
        ..LinkConditioner::PERFECT
    };
    sim.net.set_link(owner, receiver, blackout);
    sim.run_for(Duration::from_secs(1));
    sim.net.set_link(owner, receiver, LinkConditioner::PERFECT);
    sim.run_for(Duration::from_millis(500));
    let before = owner_stats(&sim).differences;
    sim.run_for(Duration::from_secs(1));
    let after = owner_stats(&sim);
    assert!(
        after.differences > before + u64::from(ENTITIES) * 30,
        "a second after the link came back, values go as differences again: {before} then {after:?}"
    );
    stop_and_converge(
        &mut sim,
        "the receiver holds exactly the owner's transforms",
    );
    assert!(
        sim.apps[1]
            .world()
            .resource::<ConnectedPeers>()
            .contains(owner),
        "the blackout was shorter than the peer timeout"
    );
}

#[test]
fn a_difference_from_a_value_the_receiver_lacks_is_asked_for_whole() {
    let mut sim = Sim::new(4, LinkConditioner::PERFECT, 1, with_differences);
    let inject = join_hostile(&mut sim, with_differences);
    sim.connect_all();
    let receiver = local_id(&sim.apps[0]);
    sim.apps[1]
        .world_mut()
        .spawn((Replicated, Moving(0), Transform::default()));
    sim.run_until(
        Duration::from_secs(2),
        "the receiver holds the owner's entity",
        |sim| held(&mut sim.apps[0]).len() == 1,
    );
    note_rejections(&mut sim.apps[0]);
    // A mutation of the owner's first entity (number 1) with its transform (component 0) as a
    // difference from the value of a tick the receiver never got: tick 1 minus age 1.
    let mut message = Vec::new();
    for header in [1, 0, 0] {
        put_varint(&mut message, header); // tick, update tick needed, time
    }
    put_varint(&mut message, 1); // component 0, a group of differences
    put_varint(&mut message, 1); // one entry
    put_varint(&mut message, 1); // the group's baseline age
    put_varint(&mut message, 1 << 2); // entity 1 (gap 1), from the group's baseline
    message.extend_from_slice(&[0x01, 0x10]); // x moved 8 steps
    inject
        .lock()
        .unwrap()
        .push(reliable_message(receiver, 2, &message));
    sim.run_until(
        Duration::from_secs(1),
        "the owner hears that the receiver lacks the value and counts it",
        |sim| owner_stats_for(sim, receiver).refused_differences == 1,
    );
    sim.run_for(Duration::from_millis(500));
    assert_eq!(
        sim.apps[0].world().resource::<Rejections>().0,
        Vec::<String>::new(),
        "a difference from a value the receiver lacks is not garbage: nobody is blamed"
    );
    stop_and_converge(&mut sim, "the receiver holds exactly the owner's transform");
}

/// The owner's (second app's) figures for `receiver`.
fn owner_stats_for(sim: &Sim, receiver: PeerId) -> PeerReplicationStats {
    sim.apps[1]
        .world()
        .resource::<ReplicationStats>()
        .peer(receiver)
        .copied()
        .unwrap_or_default()
}
