//! The demo in a real browser (headless Chromium, the browser's own WebRTC) and a native
//! headless demo in one room: each receives the other's replicated player and its greeting (a
//! reliable message).
//!
//! Needs the browser build in `target/web` (`PROFILE=debug web/build.sh`, which `./ci.sh` runs)
//! and Debian's `chromium`.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use peersync_lobby::{LobbyConfig, LobbyThread};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo_binary() -> PathBuf {
    let mut path = std::env::current_exe().expect("the test binary's path");
    path.pop();
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

/// A child process whose output lines are collected; killed when dropped.
struct Watched {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(command: &mut Command) -> Watched {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (tx, lines) = channel();
        forward(child.stdout.take().unwrap(), tx.clone());
        forward(child.stderr.take().unwrap(), tx);
        Watched {
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

    fn said(&self, needle: &str) -> bool {
        self.seen.iter().any(|line| line.contains(needle))
    }
}

fn forward(stream: impl Read + Send + 'static, tx: Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_browser_demo_and_a_native_demo_see_each_other() {
    let site = workspace().join("target/web");
    assert!(
        site.join("demo_bg.wasm").exists(),
        "the browser build is missing: run `PROFILE=debug web/build.sh` (./ci.sh does)"
    );
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok())
        .expect("Debian's chromium is needed for the browser test (.ci/run installs it)");

    let lobby = LobbyThread::spawn(LobbyConfig {
        static_dir: Some(site),
        ..LobbyConfig::local()
    })
    .unwrap();
    let addr = lobby.local_addr();
    let room = "browser-test";

    let profile = tempdir("peersync-chromium");
    let mut browser = Watched::spawn(Command::new(chromium).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Real host addresses instead of mDNS names, so native webrtc-rs can reach the page
        // where multicast does not work.
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        // The page's console (where the browser bot reports) goes to stderr.
        "--enable-logging=stderr",
        "--v=0",
        &format!("--user-data-dir={}", profile.display()),
        &format!("http://{addr}/?room={room}&headless"),
    ]));
    let mut native = Watched::spawn(Command::new(demo_binary()).args([
        "--headless",
        "--room",
        room,
        "--lobby",
        &format!("ws://{addr}"),
        "--quit-after",
        "120",
    ]));

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        browser.collect();
        native.collect();
        let browser_ok = browser.said("SEES 2 PLAYERS") && browser.said("HEARD");
        let native_ok = native.said("SEES 2 PLAYERS") && native.said("HEARD");
        if browser_ok && native_ok {
            for line in browser.seen.iter().filter(|l| l.contains("[bot")) {
                println!("browser: {line}");
            }
            break;
        }
        if Instant::now() > deadline {
            let console: Vec<&String> = browser
                .seen
                .iter()
                .filter(|l| l.contains("CONSOLE") || l.contains("bot"))
                .collect();
            panic!(
                "the browser and the native demo should each see 2 players and hear a greeting\n\
                 browser console:\n{console:#?}\nnative:\n{:#?}",
                native.seen
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(profile);
}

fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
