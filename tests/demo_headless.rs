//! Three headless demo processes in one room see each other's players and greetings.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use peersync_lobby::{LobbyConfig, LobbyThread};

/// The demo example, which `cargo test` builds next to the test binaries.
fn demo_binary() -> PathBuf {
    let mut path = std::env::current_exe().expect("the test binary's path");
    path.pop(); // the test binary
    if path.ends_with("deps") {
        path.pop();
    }
    path.push("examples");
    path.push(format!("demo{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} should have been built by `cargo test`",
        path.display()
    );
    path
}

struct Demo {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(lobby: &str) -> Demo {
        let mut child = Command::new(demo_binary())
            .args([
                "--headless",
                "--room",
                "headless-test",
                "--lobby",
                lobby,
                "--quit-after",
                "60",
            ])
            .env("RUST_LOG", "warn,bevy_peersync=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the demo starts");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let forward = |stream: Box<dyn std::io::Read + Send>,
                       tx: std::sync::mpsc::Sender<String>| {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        };
        forward(Box::new(stdout), tx.clone());
        forward(Box::new(stderr), tx);
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn collect(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    fn said(&self, needle: &str) -> usize {
        self.seen
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_headless_demos_see_each_other() {
    let lobby = LobbyThread::spawn(LobbyConfig::local()).unwrap();
    let url = format!("ws://{}", lobby.local_addr());
    let mut demos: Vec<Demo> = (0..3).map(|_| Demo::start(&url)).collect();
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
