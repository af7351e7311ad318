//! What both WebRTC benches share: the raw matchbox_socket baseline's sockets, the
//! single-threaded executor switch, percentiles of individual samples.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use bevy::app::App;
use bevy::ecs::schedule::{Schedules, SingleThreadedExecutor};
use matchbox_socket::{ChannelConfig, RtcIceServerConfig, WebRtcSocket, WebRtcSocketBuilder};

/// A raw matchbox socket with the plugin's channel set (reliable, unreliable) and no ICE
/// servers (loopback needs none), its message loop on its own thread.
pub fn raw_socket(url: &str) -> WebRtcSocket {
    let (socket, message_loop) = WebRtcSocketBuilder::new(url)
        .ice_server(RtcIceServerConfig {
            urls: vec![],
            username: None,
            credential: None,
        })
        .add_channel(ChannelConfig::reliable())
        .add_channel(ChannelConfig::unreliable())
        .build();
    std::thread::spawn(move || {
        let _ = futures::executor::block_on(message_loop);
    });
    socket
}

/// Two raw sockets in `url`'s room, connected to each other.
pub fn raw_pair(url: &str) -> (WebRtcSocket, WebRtcSocket) {
    let mut a = raw_socket(url);
    let mut b = raw_socket(url);
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.connected_peers().count() == 0 || b.connected_peers().count() == 0 {
        assert!(Instant::now() < deadline, "raw sockets did not connect");
        a.update_peers();
        b.update_peers();
        std::thread::sleep(Duration::from_millis(5));
    }
    (a, b)
}

/// What a latency-sensitive headless peer would pick: Bevy's multi-threaded executor costs
/// ~80 µs per frame on this 2-core machine whatever the frame does, the single-threaded one
/// ~8 µs, which keeps the measured part visible.
pub fn single_threaded(app: &mut App) {
    for (_, schedule) in app.world_mut().resource_mut::<Schedules>().iter_mut() {
        schedule.set_executor(SingleThreadedExecutor::new());
    }
}

/// The `p` quantile (0..=1) of `samples`.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}
