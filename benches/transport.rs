//! Round trip and reliable throughput over real WebRTC on loopback: through the plugin (two
//! Bevy apps updating freely on their own threads) against raw matchbox_socket (two sockets
//! polled in tight loops), measured in the same run.
//!
//! `cargo bench --bench transport`; see BENCHMARKS.md for figures.

#[path = "support/common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_peersync::prelude::*;
use bytes::Bytes;
use common::{percentile, raw_pair};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use matchbox_socket::WebRtcSocket;
use peersync_lobby::{LobbyConfig, LobbyThread};
use serde::{Deserialize, Serialize};

const BATCH: usize = 2000;
const KIB: usize = 1024;
/// Messages a sender may have ahead of the receiver: a burst of 2000 packets overflows the
/// loopback UDP buffers and costs SCTP retransmission timeouts, which measures the kernel, not
/// the code under test. Both sides use the same window.
const WINDOW: usize = 128;

// ---------------------------------------------------------------- raw matchbox_socket

/// Echoes every packet back on its channel until dropped.
struct RawEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawEcho {
    fn start(mut socket: WebRtcSocket) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                for channel in 0..2 {
                    let data = socket.channel_mut(channel);
                    for (peer, packet) in data.receive() {
                        let _ = data.try_send(packet, peer);
                    }
                }
                std::thread::yield_now();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn raw_round_trip(
    socket: &mut WebRtcSocket,
    peer: matchbox_socket::PeerId,
    channel: usize,
) -> Duration {
    let start = Instant::now();
    socket
        .channel_mut(channel)
        .try_send(Bytes::from_static(b"ping"), peer)
        .unwrap();
    loop {
        if !socket.channel_mut(channel).receive().is_empty() {
            return start.elapsed();
        }
        std::thread::yield_now();
    }
}

/// Counts bytes received until dropped.
struct RawSink {
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawSink {
    fn start(mut socket: WebRtcSocket) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let (stopping, counter) = (stop.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let bytes: usize = socket
                    .channel_mut(0)
                    .receive()
                    .iter()
                    .map(|(_, p)| p.len())
                    .sum();
                counter.fetch_add(bytes, Ordering::Relaxed);
                std::thread::yield_now();
            }
        });
        Self {
            received,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RawSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------- through the plugin

#[derive(Serialize, Deserialize, Clone)]
struct PingReliable(u64);

#[derive(Serialize, Deserialize, Clone)]
struct PingUnreliable(u64);

#[derive(Serialize, Deserialize, Clone)]
struct Payload(Vec<u8>);

/// What the bench thread asks app A to do, and what app A reports.
#[derive(Resource, Clone, Default)]
struct Control {
    /// Round trips still to make, and on which channel (0 reliable, 1 unreliable).
    round_trips: Arc<AtomicUsize>,
    channel: Arc<AtomicUsize>,
    /// Sum of round-trip nanoseconds measured, and every sample.
    total_nanos: Arc<AtomicU64>,
    samples: Arc<Mutex<Vec<Duration>>>,
    /// Payload messages app A should have sent by now.
    target: Arc<AtomicUsize>,
    /// Payload messages app A sent.
    sent: Arc<AtomicUsize>,
    /// Payload messages app B received.
    received: Arc<AtomicUsize>,
}

#[derive(Resource, Default)]
struct Outstanding(Option<(u64, Instant)>);

fn plugin_app(url: &str, control: Control, single_threaded: bool) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        PeersyncPlugin::new(MatchboxConfig::new(url)),
    ))
    .add_peer_message::<PingReliable>(Channel::Reliable)
    .add_peer_message::<PingUnreliable>(Channel::Unreliable)
    .add_peer_message::<Payload>(Channel::Reliable)
    .insert_resource(control)
    .init_resource::<Outstanding>()
    .add_systems(Update, (echo, measure, send_batches, count_payload));
    app.finish();
    app.cleanup();
    if single_threaded {
        common::single_threaded(&mut app);
    }
    app
}

/// App B's part: send every ping back to its sender.
fn echo(
    peers: Res<ConnectedPeers>,
    mut reliable_in: MessageReader<FromPeer<PingReliable>>,
    mut unreliable_in: MessageReader<FromPeer<PingUnreliable>>,
    mut reliable_out: PeerMessageWriter<PingReliable>,
    mut unreliable_out: PeerMessageWriter<PingUnreliable>,
) {
    if peers.is_host() {
        return; // the host is app A
    }
    for ping in reliable_in.read() {
        let _ = reliable_out.send(ping.peer, &ping.message);
    }
    for ping in unreliable_in.read() {
        let _ = unreliable_out.send(ping.peer, &ping.message);
    }
}

/// App A's part: one ping at a time, timed from the game's send call to the game seeing the
/// echo.
fn measure(
    peers: Res<ConnectedPeers>,
    control: Res<Control>,
    mut outstanding: ResMut<Outstanding>,
    mut reliable_in: MessageReader<FromPeer<PingReliable>>,
    mut unreliable_in: MessageReader<FromPeer<PingUnreliable>>,
    mut reliable_out: PeerMessageWriter<PingReliable>,
    mut unreliable_out: PeerMessageWriter<PingUnreliable>,
) {
    if !peers.is_host() {
        return;
    }
    let replies: Vec<u64> = reliable_in
        .read()
        .map(|m| m.message.0)
        .chain(unreliable_in.read().map(|m| m.message.0))
        .collect();
    if let Some((id, sent)) = outstanding.0
        && replies.contains(&id)
    {
        let rtt = sent.elapsed();
        control
            .total_nanos
            .fetch_add(rtt.as_nanos() as u64, Ordering::Relaxed);
        control.samples.lock().unwrap().push(rtt);
        control.round_trips.fetch_sub(1, Ordering::AcqRel);
        outstanding.0 = None;
    }
    if outstanding.0.is_none() && control.round_trips.load(Ordering::Acquire) > 0 {
        let id = rand_id();
        let sent = match control.channel.load(Ordering::Relaxed) {
            0 => reliable_out.broadcast(&PingReliable(id)),
            _ => unreliable_out.broadcast(&PingUnreliable(id)),
        };
        sent.unwrap();
        outstanding.0 = Some((id, Instant::now()));
    }
}

fn rand_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn send_batches(
    peers: Res<ConnectedPeers>,
    control: Res<Control>,
    mut out: PeerMessageWriter<Payload>,
) {
    if !peers.is_host() {
        return;
    }
    let target = control.target.load(Ordering::Acquire);
    let received = control.received.load(Ordering::Acquire);
    let mut sent = control.sent.load(Ordering::Acquire);
    let payload = Payload(vec![7; KIB - 3]); // 1 KiB once encoded
    while sent < target && sent - received < WINDOW {
        out.broadcast(&payload).unwrap();
        sent += 1;
    }
    control.sent.store(sent, Ordering::Release);
}

fn count_payload(control: Res<Control>, mut payload: MessageReader<FromPeer<Payload>>) {
    let count = payload.read().count();
    control.received.fetch_add(count, Ordering::Relaxed);
}

/// Two apps updating freely on their own threads until dropped.
struct PluginPair {
    control: Control,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl PluginPair {
    fn start(url: &str, single_threaded: bool) -> Self {
        let control = Control::default();
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let threads = (0..2)
            .map(|_| {
                let (url, control, stop, connected) = (
                    url.to_owned(),
                    control.clone(),
                    stop.clone(),
                    connected.clone(),
                );
                std::thread::spawn(move || {
                    let mut app = plugin_app(&url, control, single_threaded);
                    let mut counted = false;
                    while !stop.load(Ordering::Relaxed) {
                        app.update();
                        if !counted && !app.world().resource::<ConnectedPeers>().is_empty() {
                            counted = true;
                            connected.fetch_add(1, Ordering::Release);
                        }
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while connected.load(Ordering::Acquire) < 2 {
            assert!(Instant::now() < deadline, "plugin apps did not connect");
            std::thread::sleep(Duration::from_millis(5));
        }
        Self {
            control,
            stop,
            threads,
        }
    }

    fn round_trips(&self, channel: usize, iters: u64) -> Duration {
        let control = &self.control;
        control.channel.store(channel, Ordering::Relaxed);
        control.total_nanos.store(0, Ordering::Relaxed);
        control.round_trips.store(iters as usize, Ordering::Release);
        // App A times each round trip itself; this thread only waits, without taking a core.
        while control.round_trips.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        Duration::from_nanos(control.total_nanos.load(Ordering::Relaxed))
    }

    fn throughput(&self) -> Duration {
        let control = &self.control;
        let target = control.received.load(Ordering::Acquire) + BATCH;
        let start = Instant::now();
        control.target.store(target, Ordering::Release);
        while control.received.load(Ordering::Acquire) < target {
            std::thread::sleep(Duration::from_micros(50));
        }
        start.elapsed()
    }
}

impl Drop for PluginPair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------- benches

fn bench(c: &mut Criterion) {
    let lobby = LobbyThread::spawn(LobbyConfig::local()).unwrap();
    let url = |room: &str| format!("ws://{}/{room}", lobby.local_addr());
    let mut summary = Vec::new();

    let mut group = c.benchmark_group("round_trip");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    for (channel, name) in [(0, "reliable"), (1, "unreliable")] {
        let (mut a, b) = raw_pair(&url(&format!("raw-rtt-{name}")));
        let peer = a.connected_peers().next().unwrap();
        let _echo = RawEcho::start(b);
        let mut raw_samples = Vec::new();
        group.bench_function(BenchmarkId::new("raw_matchbox", name), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let rtt = raw_round_trip(&mut a, peer, channel);
                    raw_samples.push(rtt);
                    total += rtt;
                }
                total
            })
        });
        drop(_echo);

        for (single_threaded, variant) in [(false, "plugin"), (true, "plugin_single_threaded")] {
            let pair = PluginPair::start(&url(&format!("{variant}-rtt-{name}")), single_threaded);
            group.bench_function(BenchmarkId::new(variant, name), |bench| {
                bench.iter_custom(|iters| pair.round_trips(channel, iters))
            });
            let mut plugin_samples = std::mem::take(&mut *pair.control.samples.lock().unwrap());
            drop(pair);
            summary.push(format!(
                "round trip {name}: p50 raw {:?}, {variant} {:?} (+{:?}); p99 raw {:?}, {variant} {:?}",
                percentile(&mut raw_samples, 0.5),
                percentile(&mut plugin_samples, 0.5),
                percentile(&mut plugin_samples, 0.5).saturating_sub(percentile(&mut raw_samples, 0.5)),
                percentile(&mut raw_samples, 0.99),
                percentile(&mut plugin_samples, 0.99),
            ));
        }
    }
    group.finish();

    let mut group = c.benchmark_group("reliable_1kib");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes((BATCH * KIB) as u64));
    {
        let (mut a, b) = raw_pair(&url("raw-throughput"));
        let peer = a.connected_peers().next().unwrap();
        let sink = RawSink::start(b);
        let payload = Bytes::from(vec![7u8; KIB]);
        group.bench_function("raw_matchbox", |bench| {
            bench.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let start_bytes = sink.received.load(Ordering::Acquire);
                    let mut sent = 0;
                    while sent < BATCH {
                        let received = (sink.received.load(Ordering::Acquire) - start_bytes) / KIB;
                        while sent < BATCH && sent - received < WINDOW {
                            a.channel_mut(0).try_send(payload.clone(), peer).unwrap();
                            sent += 1;
                        }
                        std::thread::yield_now();
                    }
                    while sink.received.load(Ordering::Acquire) < start_bytes + BATCH * KIB {
                        std::thread::yield_now();
                    }
                }
                start.elapsed()
            })
        });
    }
    for (single_threaded, variant) in [(false, "plugin"), (true, "plugin_single_threaded")] {
        let pair = PluginPair::start(&url(&format!("{variant}-throughput")), single_threaded);
        group.bench_function(variant, |bench| {
            bench.iter_custom(|iters| (0..iters).map(|_| pair.throughput()).sum())
        });
    }
    group.finish();

    for line in summary {
        eprintln!("{line}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
