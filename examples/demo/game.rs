//! The game itself: squares that move, and a ball the host simulates.

use bevy::prelude::*;
use bevy_peersync::prelude::*;
use serde::{Deserialize, Serialize};

/// Half the arena's width and height.
pub const ARENA: Vec2 = Vec2::new(480.0, 300.0);
pub const PLAYER_SIZE: f32 = 40.0;
pub const BALL_SIZE: f32 = 24.0;
const PLAYER_SPEED: f32 = 320.0;

/// A player's square. Replicated: the marker tells receivers what the entity is.
#[derive(Component, Serialize, Deserialize, Clone, Copy, Debug, Default)]
pub struct Player;

/// The shared ball, owned by the host.
#[derive(Component, Serialize, Deserialize, Clone, Copy, Debug, Default)]
pub struct Ball;

/// The ball's velocity. Only the host simulates the ball, but the velocity is replicated too,
/// so that the next host carries on the ball's motion instead of stopping it.
#[derive(Component, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Velocity(pub Vec2);

/// Where this peer wants its square to go, from the keyboard or a bot.
#[derive(Resource, Default)]
pub struct Steering(pub Vec2);

pub fn plugin(app: &mut App) {
    app.init_resource::<Steering>()
        .add_systems(Startup, spawn_my_player)
        .add_systems(
            Update,
            (move_my_player, spawn_ball_when_host, simulate_ball).chain(),
        );
}

fn spawn_my_player(mut commands: Commands) {
    // Spawned before we are even in the room: it is sent to every peer once we are.
    commands.spawn((Replicated, Player, Transform::from_xyz(0.0, 0.0, 1.0)));
}

fn move_my_player(
    time: Res<Time>,
    steering: Res<Steering>,
    mut players: Query<(&Owner, &mut Transform), With<Player>>,
) {
    for (owner, mut transform) in &mut players {
        if !owner.is_local() {
            continue; // others' squares follow their owners
        }
        let step = steering.0.clamp_length_max(1.0) * PLAYER_SPEED * time.delta_secs();
        let limit = ARENA - Vec2::splat(PLAYER_SIZE / 2.0);
        let position = (transform.translation.truncate() + step).clamp(-limit, limit);
        transform.translation = position.extend(1.0);
    }
}

/// The host makes sure there is a ball, once the room has settled: peers that start together
/// agree on one host first, so only one ball is made (and if two sessions that each made one
/// meet, the library keeps the older session's). A world entity: `HostOwned`, so it moves to
/// the next host if this one leaves.
fn spawn_ball_when_host(
    mut commands: Commands,
    peers: Res<ConnectedPeers>,
    balls: Query<(), With<Ball>>,
) {
    if peers.is_settled() && peers.is_host() && balls.is_empty() {
        commands.spawn((
            Replicated,
            HostOwned,
            Ball,
            Velocity::default(),
            Transform::from_xyz(0.0, 0.0, 2.0),
        ));
    }
}

/// Only the ball's owner (the host) moves it: players push it, walls bounce it.
fn simulate_ball(
    time: Res<Time>,
    mut commands: Commands,
    players: Query<&Transform, (With<Player>, Without<Ball>)>,
    mut balls: Query<(Entity, &Owner, &mut Transform, Option<&mut Velocity>), With<Ball>>,
) {
    let dt = time.delta_secs();
    for (entity, owner, transform, velocity) in &mut balls {
        if !owner.is_local() {
            continue;
        }
        let Some(mut velocity) = velocity else {
            // Made by a host that had no velocity to give (an older build): start from rest.
            commands.entity(entity).insert(Velocity::default());
            continue;
        };
        // Worked on a copy and written only when it changed, so a ball at rest sends nothing.
        let mut moving = *velocity;
        let mut position = transform.translation.truncate();
        for player in &players {
            let offset = position - player.translation.truncate();
            let reach = (PLAYER_SIZE + BALL_SIZE) / 2.0;
            if offset.abs().max_element() < reach {
                let push = offset.try_normalize().unwrap_or(Vec2::X);
                moving.0 = moving.0.lerp(push * 500.0, 0.5);
                position += push * 2.0;
            }
        }
        position += moving.0 * dt;
        moving.0 *= 0.985_f32.powf(dt * 60.0);
        if moving.0.length_squared() < 1.0 {
            moving.0 = Vec2::ZERO;
        }
        let limit = ARENA - Vec2::splat(BALL_SIZE / 2.0);
        for axis in 0..2 {
            if position[axis].abs() > limit[axis] {
                position[axis] = position[axis].clamp(-limit[axis], limit[axis]);
                moving.0[axis] = -moving.0[axis] * 0.8;
            }
        }
        velocity.set_if_neq(moving);
        transform
            .map_unchanged(|t| &mut t.translation)
            .set_if_neq(position.extend(2.0));
    }
}

/// A stable colour per peer.
pub fn color_of(player: PlayerId) -> Color {
    let hue = (u16::from_le_bytes([player.0[0], player.0[1]]) % 360) as f32;
    Color::hsl(hue, 0.7, 0.55)
}
