//! A bot: steers its square along a path and reports what it sees, for headless runs and tests.

use std::collections::HashMap;
use std::time::Duration;

use bevy::prelude::*;
use bevy_peersync::prelude::*;

use crate::game::{Ball, Player, Steering};
use crate::net::{Heard, short};

#[derive(Resource)]
struct Report {
    timer: Timer,
    players: usize,
    heard: usize,
    /// Whether each peer is reached through a TURN relay, once WebRTC says.
    relayed: HashMap<PeerId, bool>,
}

pub fn plugin(app: &mut App) {
    app.insert_resource(Report {
        timer: Timer::new(Duration::from_secs(1), TimerMode::Repeating),
        players: 0,
        heard: 0,
        relayed: HashMap::new(),
    })
    .add_systems(Update, (steer, report, report_paths))
    .add_observer(report_connected);
}

/// Circles around a point of its own, so several bots do not sit on top of each other.
fn steer(time: Res<Time>, peers: Res<ConnectedPeers>, mut steering: ResMut<Steering>) {
    let t = time.elapsed_secs();
    let phase = peers
        .local_id()
        .map_or(0.0, |id| (id.0 % 628) as f32 / 100.0);
    steering.0 = Vec2::new((t + phase).cos(), (t + phase).sin());
}

/// Prints a report line: on stdout, or in the browser's console.
fn say(line: String) {
    #[cfg(not(target_arch = "wasm32"))]
    println!("{line}");
    #[cfg(target_arch = "wasm32")]
    web_sys::console::log_1(&line.into());
}

/// Prints a line when a peer connects; in the browser with the time since the page began
/// loading (the load-time figure in BENCHMARKS.md reads it).
fn report_connected(joined: On<PeerConnected>, peers: Res<ConnectedPeers>) {
    let Some(me) = peers.local_id() else {
        return;
    };
    #[cfg(not(target_arch = "wasm32"))]
    let when = String::new();
    #[cfg(target_arch = "wasm32")]
    let when = web_sys::window()
        .and_then(|window| window.performance())
        .map_or(String::new(), |clock| {
            format!(", {:.0} ms after the page began loading", clock.now())
        });
    say(format!(
        "[bot {}] CONNECTED TO {}{when}",
        short(me),
        short(joined.peer)
    ));
}

/// Prints a line when the number of players seen or greetings heard changes (tests read
/// these), and a summary every second.
fn report(
    time: Res<Time>,
    mut state: ResMut<Report>,
    peers: Res<ConnectedPeers>,
    heard: Res<Heard>,
    // Players whose connection is lost, waiting to resume, are not counted.
    players: Query<&Owner, (With<Player>, Without<Suspended>)>,
    balls: Query<(&Owner, &Transform), With<Ball>>,
) {
    let Some(me) = peers.local_id() else {
        return;
    };
    let seen = players.iter().count();
    if seen != state.players {
        state.players = seen;
        say(format!("[bot {}] SEES {seen} PLAYERS", short(me)));
    }
    if heard.total != state.heard {
        let new = (heard.total - state.heard).min(heard.recent.len());
        for line in &heard.recent[heard.recent.len() - new..] {
            say(format!("[bot {}] HEARD {line}", short(me)));
        }
        state.heard = heard.total;
    }
    if state.timer.tick(time.delta()).just_finished() {
        let ball = balls
            .iter()
            .next()
            .map_or("no ball".to_owned(), |(owner, transform)| {
                let owner = owner.peer().map_or("me".to_owned(), short);
                format!(
                    "ball at ({:.0}, {:.0}) owned by {owner}",
                    transform.translation.x, transform.translation.y
                )
            });
        let host = peers.host().map_or("-".to_owned(), short);
        say(format!(
            "[bot {}] {seen} players, {ball}, host {host}",
            short(me)
        ));
    }
}

/// Prints how each peer is reached when WebRTC tells (and when that changes): a relayed path
/// is the one thing about NAT traversal a player cannot see, and the NAT tests read it.
fn report_paths(
    mut state: ResMut<Report>,
    connected: Res<ConnectedPeers>,
    socket: Option<Res<PeerSocket>>,
    peers: Query<&Peer>,
) {
    let (Some(me), Some(socket)) = (connected.local_id(), socket) else {
        return;
    };
    state
        .relayed
        .retain(|id, _| peers.iter().any(|p| p.id == *id));
    for peer in &peers {
        let Some(relayed) = socket.relayed(peer.id) else {
            continue;
        };
        if state.relayed.insert(peer.id, relayed) != Some(relayed) {
            let how = if relayed {
                "THROUGH A RELAY"
            } else {
                "DIRECTLY"
            };
            say(format!(
                "[bot {}] REACHES {} {how}",
                short(me),
                short(peer.id)
            ));
        }
    }
}
