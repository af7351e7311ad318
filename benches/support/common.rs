//! What the benches share: the raw matchbox_socket baseline's sockets, the single-threaded
//! executor switch, percentiles of individual samples, a memory transport that counts what an
//! app sends.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bevy::app::App;
use bevy::ecs::schedule::{Schedules, SingleThreadedExecutor};
use bevy_peersync::Channel;
use bevy_peersync::transport::{MemoryTransport, SocketState, Transport, TransportIo};
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

/// What an app has sent: bytes by channel, and packets.
#[derive(Default)]
pub struct Traffic {
    pub unreliable: AtomicUsize,
    pub reliable: AtomicUsize,
    pub packets: AtomicUsize,
}

impl Traffic {
    pub fn packets(&self) -> usize {
        self.packets.load(Ordering::Relaxed)
    }
    pub fn unreliable(&self) -> usize {
        self.unreliable.load(Ordering::Relaxed)
    }
    pub fn total(&self) -> usize {
        self.unreliable() + self.reliable.load(Ordering::Relaxed)
    }
}

/// Counts the bytes an app sends.
pub struct Counting {
    pub inner: MemoryTransport,
    pub traffic: Arc<Traffic>,
}

impl Transport for Counting {
    fn receive(&mut self, now: Duration, io: &mut TransportIo) {
        self.inner.receive(now, io);
    }
    fn send(&mut self, io: &mut TransportIo) {
        for packet in &io.outgoing {
            let counter = match packet.channel {
                Channel::Unreliable => &self.traffic.unreliable,
                Channel::Reliable => &self.traffic.reliable,
            };
            counter.fetch_add(packet.bytes.len(), Ordering::Relaxed);
        }
        let packets = io.outgoing.len();
        self.traffic.packets.fetch_add(packets, Ordering::Relaxed);
        self.inner.send(io);
    }
    fn state(&self) -> SocketState {
        self.inner.state()
    }
    fn close(&mut self) {
        self.inner.close();
    }
}
