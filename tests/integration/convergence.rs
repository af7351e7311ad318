//! Under loss, latency, jitter, reordering and duplication, every peer ends up holding exactly
//! what the owners hold, within a second of the last change.

use std::time::Duration;

use crate::support::sim::*;
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;

/// Entities this app spawned for the script, by index.
#[derive(Component)]
struct Scripted(u32);

#[derive(Resource, Default)]
struct Script {
    frame: u32,
    running: bool,
}

fn setup(app: &mut App) {
    replicate_basics(app);
    app.insert_resource(Script {
        frame: 0,
        running: true,
    })
    .add_systems(Startup, |mut commands: Commands| {
        for index in 0..4 {
            commands.spawn((
                Replicated,
                Scripted(index),
                Transform::default(),
                Health(100),
            ));
        }
    })
    .add_systems(Update, play);
}

/// Moves every owned entity each frame, changes health now and then, inserts and removes a
/// label, and replaces one entity with a new one.
fn play(
    mut script: ResMut<Script>,
    mut commands: Commands,
    mut entities: Query<(Entity, &Scripted, &mut Transform, &mut Health)>,
) {
    if !script.running {
        return;
    }
    script.frame += 1;
    let frame = script.frame;
    let t = frame as f32 / 60.0;
    for (entity, scripted, mut transform, mut health) in &mut entities {
        let phase = scripted.0 as f32;
        transform.translation = Vec3::new((t + phase).sin() * 10.0, (t * 0.7).cos() * 5.0, phase);
        transform.rotation = Quat::from_rotation_z(t + phase);
        if frame % 30 == scripted.0 {
            health.0 = health.0.wrapping_sub(1);
        }
        match (frame, scripted.0) {
            (60, 0) => {
                commands.entity(entity).insert(Tag("shield".into()));
            }
            (90, 0) => {
                commands.entity(entity).remove::<Tag>();
            }
            (100, 1) => {
                commands.entity(entity).insert(Tag(format!("buff {frame}")));
            }
            (120, 3) => {
                commands.entity(entity).despawn();
                commands.spawn((Replicated, Scripted(7), Transform::default(), Health(50)));
            }
            _ => {}
        }
    }
}

fn run(seed: u64) {
    let conditioner = LinkConditioner {
        loss: 0.2,
        latency: Duration::from_millis(100),
        jitter: Duration::from_millis(30),
        duplicate: 0.05,
        reorder: 0.1,
    };
    let mut sim = Sim::new(seed, conditioner, 3, setup);
    sim.connect_all();
    sim.run_for(Duration::from_secs(3));
    for app in &mut sim.apps {
        app.world_mut().resource_mut::<Script>().running = false;
    }
    let took = sim.run_until(
        Duration::from_secs(1),
        "every peer holds the owners' state",
        |sim| converged(&mut sim.apps),
    );
    let truth = truth(&mut sim.apps);
    assert_eq!(truth.len(), 12, "3 peers × 4 entities (one replaced each)");
    assert_eq!(
        truth.values().filter(|h| h.tag.is_some()).count(),
        3,
        "one label left per peer"
    );
    println!("seed {seed}: converged {took:?} after the last change");
}

#[test]
fn converges_under_a_bad_network_seed_1() {
    run(1);
}

#[test]
fn converges_under_a_bad_network_seed_2() {
    run(2);
}

#[test]
fn converges_under_a_bad_network_seed_3() {
    run(3);
}

#[test]
fn converges_under_a_bad_network_seed_4() {
    run(4);
}
