//! The demo in a real browser (headless Chromium, the browser's own WebRTC) and a native
//! headless demo in one room: each receives the other's replicated player and its greeting (a
//! reliable message).
//!
//! Needs the browser build in `<cargo target dir>/web` (`PROFILE=debug web/build.sh`, which
//! `./ci.sh` runs) and Debian's `chromium`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::{Watched, demo_binary};
use peersync_lobby::{LobbyConfig, LobbyThread};

/// `web/build.sh` builds into `<target dir>/web`; this test binary is `<target dir>/<profile>/deps/…`.
fn site() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in <target dir>/<profile>/deps")
        .join("web")
}

#[test]
fn the_browser_demo_and_a_native_demo_see_each_other() {
    let site = site();
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
        let browser_ok = browser.said("SEES 2 PLAYERS") > 0 && browser.said("HEARD") > 0;
        let native_ok = native.said("SEES 2 PLAYERS") > 0 && native.said("HEARD") > 0;
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
