//! Shows typed peer messages: a terminal chat between every player of one room.
//!
//! Run it in two or more terminals: `cargo run --example chat`. The first starts a lobby on
//! 127.0.0.1:3536 if none answers there; type a line and press Enter to send it to everyone.

#[path = "support/local_lobby.rs"]
mod local_lobby;

use std::io::BufRead;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy_peersync::prelude::*;
use serde::{Deserialize, Serialize};

/// What players say to each other: registered on the reliable channel, so lines arrive
/// complete and in order.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Say(String);

/// Lines typed in the terminal, read on another thread.
#[derive(Resource)]
struct Stdin(Mutex<Receiver<String>>);

fn main() {
    local_lobby::keep_lobby(local_lobby::lobby_addr());
    let url = format!("ws://{}/chat", local_lobby::lobby_addr());

    let (lines, stdin) = channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    App::new()
        .add_plugins(
            MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_secs_f64(
                1.0 / 60.0,
            ))),
        )
        .add_plugins(PeersyncPlugin::new(MatchboxConfig::new(url)))
        .add_peer_message::<Say>(Channel::Reliable)
        .insert_resource(Stdin(Mutex::new(stdin)))
        .add_observer(
            |joined: On<PeerConnected>, mut say: PeerMessageWriter<Say>| {
                println!("* {} joined", joined.peer);
                let _ = say.send(joined.peer, &Say("hello!".into()));
            },
        )
        .add_observer(|left: On<PeerDisconnected>| println!("* {} left", left.peer))
        .add_observer(|changed: On<SocketStateChanged>| println!("* socket {}", changed.state))
        .add_systems(Update, (send_typed_lines, print_messages))
        .run();
}

fn send_typed_lines(stdin: Res<Stdin>, mut say: PeerMessageWriter<Say>) {
    let stdin = stdin.0.lock().unwrap();
    while let Ok(line) = stdin.try_recv() {
        if let Err(error) = say.broadcast(&Say(line)) {
            println!("* not sent: {error}");
        }
    }
}

fn print_messages(mut heard: MessageReader<FromPeer<Say>>) {
    for said in heard.read() {
        println!("{}: {}", said.peer, said.message.0);
    }
}
