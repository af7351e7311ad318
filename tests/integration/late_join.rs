//! A peer that joins a running room gets the full current state, then the changes.

use std::time::Duration;

use crate::support::sim::*;
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;

#[derive(Component)]
struct Spinning;

fn setup(app: &mut App) {
    replicate_basics(app);
    app.add_systems(
        Update,
        |time: Res<Time>, mut spinning: Query<&mut Transform, With<Spinning>>| {
            for mut transform in &mut spinning {
                transform.rotate_z(time.delta_secs());
                transform.translation.x += time.delta_secs();
            }
        },
    );
}

#[test]
fn a_late_joiner_gets_everything_then_the_changes() {
    let conditioner = LinkConditioner {
        loss: 0.05,
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(10),
        ..LinkConditioner::PERFECT
    };
    let mut sim = Sim::new(41, conditioner, 2, setup);
    sim.connect_all();
    for app in &mut sim.apps {
        for i in 0..20 {
            app.world_mut().spawn((
                Replicated,
                Spinning,
                Transform::from_xyz(0.0, i as f32, 0.0),
                Health(i),
            ));
        }
        app.world_mut()
            .spawn((Replicated, Health(1000), Tag("still".into())));
    }
    sim.run_for(Duration::from_secs(2));

    let late = sim.join();
    sim.connect_all();
    sim.run_until(
        Duration::from_secs(2),
        "the late joiner holds all 42 entities",
        |sim| held(&mut sim.apps[late]).len() == 42,
    );
    let still = held(&mut sim.apps[late])
        .into_values()
        .filter(|h| h.tag.is_some())
        .count();
    assert_eq!(still, 2, "entities that never change arrive too");

    // Stop moving: it then holds exactly the owners' state.
    for app in &mut sim.apps {
        let world = app.world_mut();
        let spinning: Vec<Entity> = world
            .query_filtered::<Entity, With<Spinning>>()
            .iter(world)
            .collect();
        for entity in spinning {
            world.entity_mut(entity).remove::<Spinning>();
        }
    }
    sim.run_until(
        Duration::from_secs(1),
        "everyone holds the owners' state",
        |sim| converged(&mut sim.apps),
    );
}
