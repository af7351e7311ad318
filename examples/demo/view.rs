//! What the windowed demo draws: the arena, the squares in their owners' colours, the ball, and an
//! overlay with this peer's id, the host, and each peer's round trip, jitter, clock offset,
//! interpolation delay, loss and bandwidth.

use bevy::prelude::*;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::InterpolationDelay;

use crate::game::{ARENA, BALL_SIZE, Ball, PLAYER_SIZE, Player, Steering, color_of};
use crate::net::{Heard, short};

#[derive(Component)]
struct OverlayText;

pub fn plugin(app: &mut App) {
    app.add_systems(Startup, setup).add_systems(
        Update,
        (
            read_keyboard,
            paint,
            paint_mine_when_we_have_an_id,
            fade_suspended,
            update_overlay,
        )
            .chain(),
    );
}

fn setup(mut commands: Commands) {
    commands.spawn(Camera2d);
    let wall = Color::srgb(0.3, 0.3, 0.35);
    for (size, position) in [
        (
            Vec2::new(ARENA.x * 2.0 + 8.0, 4.0),
            Vec2::new(0.0, ARENA.y + 2.0),
        ),
        (
            Vec2::new(ARENA.x * 2.0 + 8.0, 4.0),
            Vec2::new(0.0, -ARENA.y - 2.0),
        ),
        (Vec2::new(4.0, ARENA.y * 2.0), Vec2::new(ARENA.x + 2.0, 0.0)),
        (
            Vec2::new(4.0, ARENA.y * 2.0),
            Vec2::new(-ARENA.x - 2.0, 0.0),
        ),
    ] {
        commands.spawn((
            Sprite::from_color(wall, size),
            Transform::from_translation(position.extend(0.0)),
        ));
    }
    commands.spawn((
        OverlayText,
        Text::new("connecting…"),
        TextFont::default().with_font_size(15.0),
        Node {
            position_type: PositionType::Absolute,
            top: Val::Px(8.0),
            left: Val::Px(10.0),
            ..default()
        },
    ));
}

fn read_keyboard(keys: Res<ButtonInput<KeyCode>>, mut steering: ResMut<Steering>) {
    let mut direction = Vec2::ZERO;
    for (key_a, key_b, step) in [
        (KeyCode::ArrowLeft, KeyCode::KeyA, Vec2::NEG_X),
        (KeyCode::ArrowRight, KeyCode::KeyD, Vec2::X),
        (KeyCode::ArrowUp, KeyCode::KeyW, Vec2::Y),
        (KeyCode::ArrowDown, KeyCode::KeyS, Vec2::NEG_Y),
    ] {
        if keys.pressed(key_a) || keys.pressed(key_b) {
            direction += step;
        }
    }
    steering.0 = direction;
}

/// Squares without a sprite yet, or whose owner changed.
type NeedsPaint = (With<Player>, Or<(Changed<Owner>, Without<Sprite>)>);

/// Our own square is spawned before the lobby gives us an id (and a colour).
fn paint_mine_when_we_have_an_id(
    peers: Res<ConnectedPeers>,
    mut mine: Query<(&Owner, &mut Sprite), With<Player>>,
    mut painted: Local<bool>,
) {
    let (Some(_), Some(me)) = (peers.local_id(), peers.local_player()) else {
        *painted = false;
        return;
    };
    if *painted {
        return;
    }
    for (owner, mut sprite) in &mut mine {
        if owner.is_local() {
            sprite.color = color_of(me);
            *painted = true;
        }
    }
}

/// A square whose player lost its connection stays, faded, while the others wait for it to
/// come back (see `SessionConfig::resume_grace`).
fn fade_suspended(mut squares: Query<(&mut Sprite, Has<Suspended>), With<Player>>) {
    for (mut sprite, suspended) in &mut squares {
        let alpha = if suspended { 0.3 } else { 1.0 };
        if sprite.color.alpha() != alpha {
            sprite.color.set_alpha(alpha);
        }
    }
}

/// Gives new squares and balls a sprite, and squares their owner's colour (which changes only if
/// the owner does).
fn paint(
    mut commands: Commands,
    peers: Res<ConnectedPeers>,
    players: Query<(Entity, &Owner, Option<&Sprite>), NeedsPaint>,
    balls: Query<Entity, (With<Ball>, Without<Sprite>)>,
) {
    for (entity, owner, sprite) in &players {
        // Coloured by player, so a player that reconnects keeps its colour.
        let player = owner.player().or(peers.local_player());
        let color = player.map_or(Color::srgb(0.6, 0.6, 0.6), color_of);
        match sprite {
            None => {
                commands
                    .entity(entity)
                    .insert(Sprite::from_color(color, Vec2::splat(PLAYER_SIZE)));
                if owner.is_local() {
                    // Mark our own square with a dot.
                    let dot = commands
                        .spawn((
                            Sprite::from_color(Color::WHITE, Vec2::splat(10.0)),
                            Transform::from_xyz(0.0, 0.0, 0.5),
                        ))
                        .id();
                    commands.entity(entity).add_child(dot);
                }
            }
            Some(_) => {
                commands
                    .entity(entity)
                    .insert(Sprite::from_color(color, Vec2::splat(PLAYER_SIZE)));
            }
        }
    }
    for entity in &balls {
        commands.entity(entity).insert(Sprite::from_color(
            Color::srgb(1.0, 0.9, 0.3),
            Vec2::splat(BALL_SIZE),
        ));
    }
}

fn update_overlay(
    socket: Option<Res<PeerSocket>>,
    peers: Res<ConnectedPeers>,
    heard: Res<Heard>,
    stats: Query<(&Peer, &PeerStats, Option<&InterpolationDelay>)>,
    mut text: Query<&mut Text, With<OverlayText>>,
) {
    let Ok(mut text) = text.single_mut() else {
        return;
    };
    let mut lines = Vec::new();
    match (peers.local_id(), socket.as_ref().map(|s| s.state().clone())) {
        (Some(me), _) => lines.push(format!(
            "me {}{}   arrows/WASD to move, push the ball",
            short(me),
            if peers.is_host() { " (host)" } else { "" }
        )),
        (None, Some(state)) => lines.push(format!("socket {state}")),
        (None, None) => lines.push("no socket".to_owned()),
    }
    if let Some(host) = peers.host()
        && !peers.is_host()
    {
        lines.push(format!("host {}", short(host)));
    }
    let mut rows: Vec<_> = stats.iter().collect();
    rows.sort_by_key(|(peer, _, _)| peer.id);
    for (peer, stats, delay) in rows {
        let rtt = stats.rtt.map_or("   -   ".to_owned(), |rtt| {
            format!("{:5.1} ms", rtt.as_secs_f64() * 1000.0)
        });
        // How late its squares are shown, and how much of that is the interpolation buffer.
        let shown = delay.map_or("   -   ".to_owned(), |delay| {
            format!(
                "{:5.1} ms (buffer {:4.1})",
                delay.total.as_secs_f64() * 1000.0,
                delay.buffer.as_secs_f64() * 1000.0
            )
        });
        let jitter = stats.jitter.map_or("  -  ".to_owned(), |jitter| {
            format!("{:4.1} ms", jitter.as_secs_f64() * 1000.0)
        });
        // Its clock minus ours: what the interpolation maps its timestamps with.
        let offset = stats.clock_offset.map_or("   -   ".to_owned(), |offset| {
            format!("{:+7.1} ms", offset * 1000.0)
        });
        lines.push(format!(
            "{}  rtt {rtt}  jitter {jitter}  clock {offset}  shown {shown} late  loss {:4.1}%  \
             up {:5.1} kbit/s  down {:5.1} kbit/s",
            short(peer.id),
            stats.packet_loss * 100.0,
            stats.sent_bytes_per_sec * 8.0 / 1000.0,
            stats.received_bytes_per_sec * 8.0 / 1000.0,
        ));
    }
    lines.extend(heard.recent.iter().cloned());
    **text = lines.join("\n");
}
