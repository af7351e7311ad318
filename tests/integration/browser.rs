//! The demo in real browsers (headless Chromium and Firefox ESR, each with its own WebRTC) and a
//! native headless demo in one room: each receives the others' replicated players and their
//! greetings (a reliable message), browser to native and browser to browser.
//!
//! Needs the browser build in `<cargo target dir>/web` (`PROFILE=debug web/build.sh`, which
//! `./ci.sh` runs) and Debian's `chromium` and `firefox-esr` (`.ci/run` installs them).
//!
//! `figures_page_load` (ignored) measures how long a page takes from loading to connected.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::{
    Watched, demo_binary, free_port, poll_output, start_demo, start_lobby,
};
use peersync_lobby::{LobbyConfig, LobbyThread};

/// `web/build.sh` builds into `<target dir>/web`; this test binary is `<target dir>/<profile>/deps/…`.
fn site() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in <target dir>/<profile>/deps")
        .join("web")
}

/// A lobby serving the browser build, on a free loopback port.
fn lobby_with_site() -> LobbyThread {
    let site = site();
    assert!(
        site.join("demo_bg.wasm").exists(),
        "the browser build is missing: run `PROFILE=debug web/build.sh` (./ci.sh does)"
    );
    lobby_serving(site)
}

/// A lobby serving the browser build in `site`, on a free loopback port.
fn lobby_serving(site: PathBuf) -> LobbyThread {
    LobbyThread::spawn(LobbyConfig {
        static_dir: Some(site),
        ..LobbyConfig::local()
    })
    .unwrap()
}

/// A browser profile directory, removed when dropped.
struct Profile(PathBuf);

impl Profile {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("peersync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Profile(dir)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The headless demo page of `room` in Chromium; its console goes to stderr.
fn chromium(lobby: &LobbyThread, room: &str, profile: &Profile) -> Watched {
    let page = format!("http://{}/?room={room}&headless", lobby.local_addr());
    chromium_page(&page, profile)
}

/// The page at `url` in headless Chromium; its console goes to stderr.
fn chromium_page(url: &str, profile: &Profile) -> Watched {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok())
        .expect("Debian's chromium is needed for the browser tests (.ci/run installs it)");
    Watched::spawn(Command::new(chromium).args([
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
        &format!("--user-data-dir={}", profile.0.display()),
        url,
    ]))
}

/// The headless demo page of `room` in Firefox ESR; its console goes to stdout.
fn firefox(lobby: &LobbyThread, room: &str, profile: &Profile) -> Watched {
    assert!(
        Command::new("firefox-esr")
            .arg("--version")
            .output()
            .is_ok(),
        "Debian's firefox-esr is needed for the browser tests (.ci/run installs it)"
    );
    // Firefox hides host addresses behind mDNS names too, which native webrtc-rs cannot
    // resolve where multicast does not work; and it prints the page's console only when asked.
    std::fs::write(
        profile.0.join("user.js"),
        "user_pref(\"devtools.console.stdout.content\", true);\n\
         user_pref(\"media.peerconnection.ice.obfuscate_host_addresses\", false);\n\
         user_pref(\"media.peerconnection.ice.loopback\", true);\n\
         user_pref(\"browser.shell.checkDefaultBrowser\", false);\n\
         user_pref(\"datareporting.policy.dataSubmissionEnabled\", false);\n",
    )
    .unwrap();
    Watched::spawn(Command::new("firefox-esr").args([
        "--headless",
        "--no-remote",
        "--profile",
        &profile.0.display().to_string(),
        &format!("http://{}/?room={room}&headless", lobby.local_addr()),
    ]))
}

fn native(lobby: &LobbyThread, room: &str) -> Watched {
    Watched::spawn(Command::new(demo_binary()).args([
        "--headless",
        "--room",
        room,
        "--lobby",
        &format!("ws://{}", lobby.local_addr()),
        "--quit-after",
        "120",
    ]))
}

/// One browser test at a time: two headless browsers loading the wasm demo at once on a 2-core
/// machine, beside the other tests, can take longer than the deadline.
static ONE_BROWSER_TEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits until every player sees `players` players and heard a greeting from each other one.
fn until_all_see_and_hear(players: &mut [(&str, Watched)], count: usize) {
    // A debug build of the wasm demo loads slowly in a browser beside the other tests.
    let deadline = Instant::now() + Duration::from_secs(150);
    let sees = format!("SEES {count} PLAYERS");
    loop {
        for (_, player) in players.iter_mut() {
            player.collect();
        }
        let done = players
            .iter()
            .all(|(_, p)| p.said(&sees) > 0 && p.said("HEARD") >= count - 1);
        if done {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = players
                .iter()
                .map(|(name, p)| {
                    let mut lines: Vec<&String> = p
                        .seen
                        .iter()
                        .filter(|l| l.contains("bot") || l.contains("CONSOLE"))
                        .collect();
                    if lines.is_empty() {
                        // Nothing from the page: what the browser itself said.
                        lines = p.seen.iter().rev().take(30).rev().collect();
                    }
                    format!("{name}: {lines:#?}")
                })
                .collect();
            panic!(
                "each of the {count} players should see {count} players and hear a greeting from \
                 every other one:\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_browser_demo_and_a_native_demo_see_each_other() {
    let _one = ONE_BROWSER_TEST.lock().unwrap_or_else(|e| e.into_inner());
    let lobby = lobby_with_site();
    let profile = Profile::new("chromium");
    let mut players = [
        ("chromium", chromium(&lobby, "browser-test", &profile)),
        ("native", native(&lobby, "browser-test")),
    ];
    until_all_see_and_hear(&mut players, 2);
}

#[test]
fn chromium_and_firefox_play_with_each_other_and_a_native_demo() {
    let _one = ONE_BROWSER_TEST.lock().unwrap_or_else(|e| e.into_inner());
    let lobby = lobby_with_site();
    let (chromium_profile, firefox_profile) =
        (Profile::new("chromium-b2b"), Profile::new("firefox-b2b"));
    let mut players = [
        ("chromium", chromium(&lobby, "b2b-test", &chromium_profile)),
        ("firefox", firefox(&lobby, "b2b-test", &firefox_profile)),
        ("native", native(&lobby, "b2b-test")),
    ];
    until_all_see_and_hear(&mut players, 3);
}

#[test]
fn a_browser_player_rejoins_a_restarted_lobby_so_that_new_players_reach_it() {
    let _one = ONE_BROWSER_TEST.lock().unwrap_or_else(|e| e.into_inner());
    let site = site();
    assert!(
        site.join("demo_bg.wasm").exists(),
        "the browser build is missing: run `PROFILE=debug web/build.sh` (./ci.sh does)"
    );
    let site = site.display().to_string();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let room = "lost-lobby-web";
    let lobby = start_lobby(port, &["--static-dir", &site]);
    let profile = Profile::new("chromium-lost-lobby");
    let page = format!("http://127.0.0.1:{port}/?room={room}&headless");
    let mut players = [
        ("chromium", chromium_page(&page, &profile)),
        ("native", start_demo(&url, room, 200)),
    ];
    until_all_see_and_hear(&mut players, 2);

    // The lobby dies and a new one starts on its port: the page's signaling is gone for good,
    // and it must notice and rejoin by itself for the new player to reach it.
    // SIGKILL, and wait until it is gone: until then its socket still holds the port, which
    // the new lobby would fail to bind while the old one still answered the readiness check.
    drop(lobby);
    let _lobby = start_lobby(port, &["--static-dir", &site]);
    let back = Instant::now();
    let marks: Vec<usize> = players.iter().map(|(_, p)| p.seen.len()).collect();
    let mut newcomer = start_demo(&url, room, 200);
    let deadline = back + Duration::from_secs(40);
    loop {
        newcomer.collect();
        for (_, player) in players.iter_mut() {
            player.collect();
        }
        let page_rejoined = players[0].1.since(marks[0]).iter().any(|l| {
            l.contains("the lobby is back after an outage") || l.contains("the lobby answers again")
        });
        let page_sees_three = players[0]
            .1
            .since(marks[0])
            .iter()
            .any(|l| l.contains("SEES 3 PLAYERS"));
        if page_sees_three && newcomer.said("SEES 3 PLAYERS") > 0 {
            // Which path brought the page back is not isolated here: its own probe, or (once
            // the native player's probe has rejoined and left it alone) matchbox ending its
            // signaling-less socket, which the transport rejoins.
            eprintln!(
                "the page's own lobby probe {} the restart",
                if page_rejoined {
                    "noticed"
                } else {
                    "did not notice"
                }
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "once the lobby is back, the browser player should rejoin it by itself and meet the \
             new player (both seeing 3 players); the page said: {:#?}\nthe native player: \
             {:#?}\nthe new player: {:#?}",
            players[0]
                .1
                .since(marks[0])
                .iter()
                .filter(|l| l.contains("CONSOLE"))
                .collect::<Vec<_>>(),
            players[1].1.since(marks[1]),
            newcomer.seen
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "a new player reached the browser player {:?} after the lobby came back",
        back.elapsed()
    );
}

/// Page load to connected, in headless Chromium on loopback, for the figures in BENCHMARKS.md
/// ("Browser build"): a native headless demo waits in a room, then a fresh Chromium profile (no
/// cache) opens the headless page of that room, whose bot says how long after the page began
/// loading (`performance.now()`) it connected to the native demo. The median of `LOAD_RUNS`
/// runs (5) for each web build: by default `<target dir>/web` if `web/build.sh` built it in a
/// release profile; `WEB_SITES=DIR,DIR` names the builds' directories, debug ones too.
#[test]
#[ignore = "a figure: needs a release web build (web/build.sh)"]
fn figures_page_load() {
    let _one = ONE_BROWSER_TEST.lock().unwrap_or_else(|e| e.into_inner());
    let sites: Vec<PathBuf> = match std::env::var("WEB_SITES") {
        Ok(list) => list.split(',').map(PathBuf::from).collect(),
        Err(_) => match build_of(&site()) {
            Some(build) if !build.starts_with("debug") => vec![site()],
            _ => {
                let site = site();
                println!(
                    "skipped: no release web build in {} (web/build.sh)",
                    site.display()
                );
                return;
            }
        },
    };
    let runs: usize = std::env::var("LOAD_RUNS").map_or(5, |n| n.parse().expect("LOAD_RUNS"));
    assert!(runs > 0, "LOAD_RUNS should be at least 1");
    for site in sites {
        let Some(build) = build_of(&site) else {
            println!("skipped: no web build in {}", site.display());
            continue;
        };
        let lobby = lobby_serving(site.clone());
        let mut in_page = Vec::new();
        let mut from_launch = Vec::new();
        for run in 0..runs {
            let (page, launch) = load_to_connected(&lobby, &format!("load-{run}"));
            println!(
                "{build}: run {run}: {page:?} after the page began loading, {launch:?} after Chromium started"
            );
            in_page.push(page);
            from_launch.push(launch);
        }
        in_page.sort();
        from_launch.sort();
        println!(
            "{build} ({}, {} bytes of wasm): page load to connected, median of {runs}: {:?} \
             (min {:?}, max {:?}); from Chromium's start: {:?}",
            site.display(),
            std::fs::metadata(site.join("demo_bg.wasm")).map_or(0, |m| m.len()),
            in_page[runs / 2],
            in_page[0],
            in_page[runs - 1],
            from_launch[runs / 2],
        );
    }
}

/// What `web/build.sh` says it built in `site` (its `build.txt`), if it built there: "debug",
/// "wasm-release, wasm-opt -Oz", ... A build from before `build.txt` says "unknown".
fn build_of(site: &Path) -> Option<String> {
    if !site.join("demo_bg.wasm").exists() {
        return None;
    }
    Some(
        std::fs::read_to_string(site.join("build.txt"))
            .map_or_else(|_| "unknown".to_owned(), |build| build.trim().to_owned()),
    )
}

/// One page load in `room` with a native demo waiting there: the time from the page's start
/// to its bot's connection as the page measured it, and as seen from here since Chromium's
/// start (50 ms polls).
fn load_to_connected(lobby: &LobbyThread, room: &str) -> (Duration, Duration) {
    let mut native = [native(lobby, room)];
    poll_output(
        &mut native,
        Duration::from_secs(60),
        "the native demo should join its room",
        |p| p[0].said("SEES 1 PLAYERS") > 0,
    );
    let profile = Profile::new(room);
    let launched = Instant::now();
    let mut page = [chromium(lobby, room, &profile)];
    poll_output(
        &mut page,
        Duration::from_secs(150),
        "the page should connect to the native demo",
        |p| p[0].said("CONNECTED TO") > 0,
    );
    let from_launch = launched.elapsed();
    // `... CONNECTED TO 1a2b3c4d, 1234 ms after the page began loading", source: ...`
    let line = page[0]
        .seen
        .iter()
        .find(|line| line.contains("CONNECTED TO"))
        .unwrap();
    let ms: f64 = line
        .split(" ms after the page began loading")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no time since page load in {line:?}"));
    (Duration::from_secs_f64(ms / 1000.0), from_launch)
}
