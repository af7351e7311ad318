//! Entities that stop changing stop costing bandwidth: once their last values are acknowledged
//! nothing more is sent for them, even when acks take longer than the resend interval.

use std::time::Duration;

use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;

use crate::support::sim::*;

#[derive(Component)]
struct Moving;

#[derive(Resource)]
struct MoveUntil(Duration);

fn setup(app: &mut App) {
    replicate_basics(app);
    app.add_systems(
        Update,
        |time: Res<Time>,
         until: Option<Res<MoveUntil>>,
         mut moving: Query<&mut Transform, With<Moving>>| {
            if until.is_some_and(|until| time.elapsed() < until.0) {
                for mut transform in &mut moving {
                    transform.translation.x += 1.0;
                }
            }
        },
    );
}

fn sent_to_the_other(app: &mut App) -> f32 {
    let world = app.world_mut();
    let mut query = world.query::<&PeerStats>();
    query
        .iter(world)
        .map(|stats| stats.sent_bytes_per_sec)
        .sum()
}

#[test]
fn entities_at_rest_cost_nothing_once_acknowledged() {
    // 60 ms each way: an ack takes longer than the resend interval (half a round trip).
    let latency = LinkConditioner {
        latency: Duration::from_millis(60),
        ..LinkConditioner::PERFECT
    };
    let mut sim = Sim::new(5, latency, 2, setup);
    sim.connect_all();
    // Bytes per second are measured over whole seconds: move for two, read in the second.
    let until = sim.now + Duration::from_secs(2);
    sim.apps[0].insert_resource(MoveUntil(until));
    for _ in 0..50 {
        sim.apps[0]
            .world_mut()
            .spawn((Replicated, Moving, Transform::default()));
    }
    sim.run_for(Duration::from_millis(1900));

    let moving = sent_to_the_other(&mut sim.apps[0]);
    sim.run_for(Duration::from_secs(3));
    let resting = sent_to_the_other(&mut sim.apps[0]);
    eprintln!("owner's upload: {moving:.0} B/s while 50 entities move, {resting:.0} B/s at rest");
    assert!(
        moving > 5000.0,
        "moving entities are sent every tick ({moving:.0} B/s)"
    );
    assert!(
        resting < 300.0,
        "at rest only pings and acks should flow, not resends of acknowledged values: \
         {resting:.0} B/s"
    );
    assert!(
        converged(&mut sim.apps),
        "the receiver holds the final values"
    );
}
