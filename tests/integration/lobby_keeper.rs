//! Demos started without `--lobby` share a lobby that the first of them runs. When that demo is
//! closed the lobby goes with it: another demo starts one, the players still there rejoin it,
//! and a new player finds them. The session survives the loss of whichever window started the
//! lobby.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::support::process::{Watched, demo_binary, poll_output};

/// A headless demo using (or running) the local lobby at `addr`.
fn start_local_demo(addr: &str) -> Watched {
    Watched::spawn(
        Command::new(demo_binary())
            .args(["--headless", "--room", "keeper", "--quit-after", "120"])
            .env("PEERSYNC_LOCAL_LOBBY", addr)
            .env("RUST_LOG", "warn,bevy_peersync=info"),
    )
}

#[test]
fn the_session_survives_the_demo_that_ran_the_lobby() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a loopback port")
        .to_string();
    let mut demos = vec![start_local_demo(&addr)];
    poll_output(
        &mut demos,
        Duration::from_secs(20),
        "the first demo should start the lobby",
        |demos| demos[0].said("started a lobby") > 0,
    );
    demos.push(start_local_demo(&addr));
    poll_output(
        &mut demos,
        Duration::from_secs(30),
        "the two demos should see each other",
        |demos| demos.iter().all(|d| d.said("SEES 2 PLAYERS") > 0),
    );

    // Closing the first window takes the lobby with it.
    demos[0].signal("KILL");
    let mark = demos[1].seen.len();
    poll_output(
        &mut demos[1..],
        Duration::from_secs(15),
        "the second demo should start a lobby of its own and rejoin the room through it",
        |demos| {
            let since = demos[0].since(mark);
            since.iter().any(|l| l.contains("started a lobby"))
                && since.iter().any(|l| l.contains("joined the room as"))
        },
    );
    let mark = demos[1].seen.len();
    demos.push(start_local_demo(&addr));
    poll_output(
        &mut demos[1..],
        Duration::from_secs(30),
        "a new demo should find the one still running, through its lobby",
        |demos| {
            demos[0]
                .since(mark)
                .iter()
                .any(|l| l.contains("SEES 2 PLAYERS"))
                && demos[1].said("SEES 2 PLAYERS") > 0
        },
    );
}
