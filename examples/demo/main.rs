//! The multiplayer demo: coloured squares that see each other move, a ball the host owns, and an
//! overlay with each peer's round trip, loss and bandwidth.
//!
//! `cargo run --example demo` in two or more terminals (the first starts a lobby on
//! 127.0.0.1:3536 if none answers). Flags: `--room NAME`, `--lobby ws://HOST:PORT`,
//! `--headless` (no window: a bot moves and prints what it sees), `--bots N` (N bots in this
//! process too), `--quit-after SECONDS`, `--net-sim LOSS,LATENCY_MS,JITTER_MS` (this player's
//! packets both ways go through a simulated bad network, e.g. `0.02,40,15`), `--stun URL` and
//! `--turn URL` (ICE servers, repeatable, e.g. `stun:turn.example.com:3478`) with `--turn-user
//! NAME --turn-pass PASSWORD` (see docs/turn.md), `--peer-timeout SECONDS` (how long a silent
//! peer is kept; default 2), `--max-abandoned-handshakes N` (rejoin the room after N handshakes
//! with peers that left before connecting; default 128, see
//! `MatchboxConfig::max_abandoned_handshakes`). In a browser, see the README.

mod bot;
mod game;
mod net;
mod view;

#[cfg(not(target_arch = "wasm32"))]
#[path = "../support/local_lobby.rs"]
mod local_lobby;

use std::time::Duration;

use bevy::app::{AppExit, ScheduleRunnerPlugin};
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use net::NetOptions;

#[derive(Debug, Clone)]
struct Options {
    room: String,
    lobby: Option<String>,
    headless: bool,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    bots: usize,
    quit_after: Option<f32>,
    net: NetOptions,
}

#[cfg(not(target_arch = "wasm32"))]
fn usage() -> ! {
    eprintln!(
        "usage: demo [--room NAME] [--lobby ws://HOST:PORT] [--headless] [--bots N] [--quit-after SECONDS] [--net-sim LOSS,LATENCY_MS,JITTER_MS] [--stun URL] [--turn URL --turn-user NAME --turn-pass PASSWORD] [--peer-timeout SECONDS] [--max-abandoned-handshakes N]"
    );
    std::process::exit(2)
}

#[cfg(not(target_arch = "wasm32"))]
fn options() -> Options {
    let mut options = Options {
        room: "demo".into(),
        lobby: None,
        headless: false,
        bots: 0,
        quit_after: None,
        net: NetOptions::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--room" => options.room = args.next().unwrap_or_else(|| usage()),
            "--lobby" => options.lobby = Some(args.next().unwrap_or_else(|| usage())),
            "--headless" => options.headless = true,
            "--bots" => {
                options.bots = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--quit-after" => {
                options.quit_after = Some(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--net-sim" => {
                options.net.net_sim = Some(
                    args.next()
                        .and_then(|spec| parse_net_sim(&spec))
                        .unwrap_or_else(|| usage()),
                )
            }
            "--stun" | "--turn" => {
                let url = args.next().unwrap_or_else(|| usage());
                // webrtc-rs would fail on a mistyped scheme only when the first peer connects.
                let scheme = arg.trim_start_matches("--");
                if !url.starts_with(&format!("{scheme}:"))
                    && !url.starts_with(&format!("{scheme}s:"))
                {
                    usage()
                }
                options.net.ice.urls.push(url)
            }
            "--turn-user" => {
                options.net.ice.username = Some(args.next().unwrap_or_else(|| usage()))
            }
            "--turn-pass" => {
                options.net.ice.credential = Some(args.next().unwrap_or_else(|| usage()))
            }
            "--max-abandoned-handshakes" => {
                options.net.max_abandoned_handshakes = Some(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n > 0)
                        .unwrap_or_else(|| usage()),
                )
            }
            "--peer-timeout" => {
                options.net.peer_timeout = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .and_then(|s| Duration::try_from_secs_f32(s).ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            _ => usage(),
        }
    }
    options
}

/// `LOSS,LATENCY_MS,JITTER_MS`, e.g. `0.02,40,15`.
fn parse_net_sim(spec: &str) -> Option<LinkConditioner> {
    let mut parts = spec.split(',');
    let loss: f32 = parts.next()?.trim().parse().ok()?;
    let latency: u64 = parts.next()?.trim().parse().ok()?;
    let jitter: u64 = parts.next()?.trim().parse().ok()?;
    if parts.next().is_some() || !(0.0..=1.0).contains(&loss) {
        return None;
    }
    Some(LinkConditioner {
        loss,
        latency: Duration::from_millis(latency),
        jitter: Duration::from_millis(jitter),
        ..LinkConditioner::PERFECT
    })
}

/// In the browser the page's address says where the lobby is (it serves the page), and the
/// query may name the room: `?room=NAME`, and `?headless` for a bot without rendering.
#[cfg(target_arch = "wasm32")]
fn options() -> Options {
    let location = web_sys::window().expect("a browser window").location();
    let host = location.host().unwrap_or_default();
    let secure = location.protocol().is_ok_and(|p| p == "https:");
    let search = location.search().unwrap_or_default();
    let param = |name: &str| {
        search.trim_start_matches('?').split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| value.to_owned())
        })
    };
    Options {
        room: param("room")
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "demo".into()),
        lobby: Some(format!("{}://{host}", if secure { "wss" } else { "ws" })),
        headless: param("headless").is_some(),
        bots: 0,
        quit_after: None,
        net: NetOptions {
            net_sim: param("net-sim").and_then(|spec| parse_net_sim(&spec.replace("%2C", ","))),
            ..NetOptions::default()
        },
    }
}

fn main() {
    let options = options();
    #[cfg(not(target_arch = "wasm32"))]
    if options.lobby.is_none() {
        local_lobby::keep_lobby(local_lobby::lobby_addr());
    }
    let lobby = options.lobby.clone().unwrap_or_else(|| {
        #[cfg(not(target_arch = "wasm32"))]
        return format!("ws://{}", local_lobby::lobby_addr());
        #[cfg(target_arch = "wasm32")]
        unreachable!("the browser always knows its lobby")
    });
    let room_url = format!("{}/{}", lobby.trim_end_matches('/'), options.room);

    #[cfg(not(target_arch = "wasm32"))]
    for _ in 0..options.bots {
        let url = room_url.clone();
        let quit_after = options.quit_after;
        // Bots in this process share its flags, but not its simulated network.
        let net = NetOptions {
            net_sim: None,
            ..options.net.clone()
        };
        std::thread::spawn(move || headless_app(url, quit_after, &net).run());
    }

    let exit = if options.headless {
        let mut app = headless_app(room_url, options.quit_after, &options.net);
        // Logs go to stderr (one app per process may own the logger: bots above have none).
        app.add_plugins(bevy::log::LogPlugin {
            filter: format!("info,{}", bevy_peersync::WEBRTC_LOG_FILTER),
            ..default()
        });
        app.run()
    } else {
        windowed_app(room_url, options.quit_after, &options.net).run()
    };
    if let AppExit::Error(code) = exit {
        std::process::exit(code.get().into());
    }
}

fn quit_after(app: &mut App, seconds: Option<f32>) {
    if let Some(seconds) = seconds {
        app.add_systems(
            Update,
            move |time: Res<Time>, mut exit: MessageWriter<AppExit>| {
                if time.elapsed_secs() > seconds {
                    exit.write(AppExit::Success);
                }
            },
        );
    }
}

/// A bot without a window: steers along a path and prints what it sees.
fn headless_app(room_url: String, seconds: Option<f32>, net_options: &NetOptions) -> App {
    let mut app = App::new();
    app.add_plugins(
        MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_secs_f64(
            1.0 / 60.0,
        ))),
    );
    net::plugin(&mut app, room_url, net_options);
    game::plugin(&mut app);
    bot::plugin(&mut app);
    quit_after(&mut app, seconds);
    app
}

fn windowed_app(room_url: String, seconds: Option<f32>, net_options: &NetOptions) -> App {
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: Some(Window {
                    title: "bevy_peersync demo".into(),
                    resolution: (1000, 680).into(),
                    #[cfg(target_arch = "wasm32")]
                    canvas: Some("#demo".into()),
                    #[cfg(target_arch = "wasm32")]
                    fit_canvas_to_parent: true,
                    ..default()
                }),
                ..default()
            })
            // The WebRTC stack warns about routine events; keep it to errors.
            .set(bevy::log::LogPlugin {
                filter: format!("info,{}", bevy_peersync::WEBRTC_LOG_FILTER),
                ..default()
            }),
    )
    .insert_resource(ClearColor(Color::srgb(0.08, 0.08, 0.1)));
    net::plugin(&mut app, room_url, net_options);
    game::plugin(&mut app);
    view::plugin(&mut app);
    quit_after(&mut app, seconds);
    app
}
