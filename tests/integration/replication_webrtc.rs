//! Replication over real WebRTC through the lobby: three apps each spawn and move an entity, and
//! all three converge on the owners' state.

use std::time::Duration;

use crate::support::harness::*;
use bevy::prelude::*;
use bevy_peersync::prelude::*;

/// Marks the entity an app moves.
#[derive(Component)]
struct Mine;

#[derive(Resource)]
struct Moving(bool);

fn setup(app: &mut App) {
    app.replicate_codec::<Transform>(TransformCodec::default())
        .insert_resource(Moving(true))
        .add_systems(Startup, |mut commands: Commands| {
            commands.spawn((Replicated, Mine, Transform::default()));
        })
        .add_systems(
            Update,
            |moving: Res<Moving>, time: Res<Time>, mut mine: Query<&mut Transform, With<Mine>>| {
                if moving.0 {
                    for mut transform in &mut mine {
                        transform.translation.x += time.delta_secs();
                        transform.rotate_y(time.delta_secs());
                    }
                }
            },
        );
}

/// Each app's view: (net id, owner, translation) of every replicated entity.
fn view(app: &mut App) -> Vec<(u64, PeerId, Vec3)> {
    let me = local_id(app).unwrap();
    let world = app.world_mut();
    let mut query = world.query::<(&NetId, &Owner, &Transform)>();
    let mut view: Vec<_> = query
        .iter(world)
        .map(|(id, owner, transform)| {
            let owner = owner.peer().unwrap_or(me);
            (id.0, owner, transform.translation)
        })
        .collect();
    view.sort_by_key(|(id, ..)| *id);
    view
}

#[test]
fn three_apps_converge_over_webrtc() {
    let lobby = lobby();
    let url = room_url(&lobby, "replication");
    let mut apps = connected_apps(&url, 3, setup);
    update_until(
        &mut apps,
        Duration::from_secs(10),
        "every app holds all three entities",
        |apps| apps.iter_mut().all(|app| view(app).len() == 3),
    );
    // Let them move a while over the real connection, then stop.
    let moving_until = std::time::Instant::now() + Duration::from_millis(500);
    update_until(
        &mut apps,
        Duration::from_secs(5),
        "half a second of movement",
        |_| std::time::Instant::now() > moving_until,
    );
    for app in &mut apps {
        app.world_mut().resource_mut::<Moving>().0 = false;
    }
    let step = TransformCodec::default().position_step;
    update_until(
        &mut apps,
        Duration::from_secs(5),
        "all views agree with the owners",
        |apps| {
            let views: Vec<_> = apps.iter_mut().map(view).collect();
            views.iter().all(|v| {
                v.len() == 3
                    && v.iter().zip(&views[0]).all(|(a, b)| {
                        a.0 == b.0 && a.1 == b.1 && (a.2 - b.2).abs().max_element() <= step
                    })
            })
        },
    );
    let views: Vec<_> = apps.iter_mut().map(view).collect();
    let owners: std::collections::BTreeSet<PeerId> =
        views[0].iter().map(|(_, owner, _)| *owner).collect();
    assert_eq!(owners.len(), 3, "each app owns one entity");
    assert!(
        views[0].iter().all(|(_, _, t)| t.x > 0.1),
        "the entities moved before stopping: {views:?}"
    );
}
