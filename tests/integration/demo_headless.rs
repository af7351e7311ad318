//! Three headless demo processes in one room see each other's players and greetings.

use std::time::{Duration, Instant};

use crate::support::process::{Watched, start_demo};
use peersync_lobby::{LobbyConfig, LobbyThread};

#[test]
fn three_headless_demos_see_each_other() {
    let lobby = LobbyThread::spawn(LobbyConfig::local()).unwrap();
    let url = format!("ws://{}", lobby.local_addr());
    let mut demos: Vec<Watched> = (0..3)
        .map(|_| start_demo(&url, "headless-test", 60))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for demo in &mut demos {
            demo.collect();
        }
        if demos
            .iter()
            .all(|d| d.said("SEES 3 PLAYERS") > 0 && d.said("HEARD") >= 2)
        {
            break;
        }
        if Instant::now() > deadline {
            let logs: Vec<_> = demos.iter().map(|d| d.seen.join("\n")).collect();
            panic!(
                "each demo should see 3 players and hear 2 greetings; they printed:\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
