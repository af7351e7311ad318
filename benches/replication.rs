//! Replication costs, each against a baseline measured in the same run:
//!
//! - per network tick with N entities whose transform (Vec3 + Quat) changes every tick: the
//!   owner's frame (collect + encode + pack + send) and a receiver's frame (decode + apply), and
//!   the bytes per entity on the wire; baseline: the same transforms with plain bincode, one
//!   message per entity (whole component, no quantization), encoded and decoded + applied;
//! - one-way latency over real WebRTC on loopback: a change on app A until it is applied on
//!   app B (apps updating freely), against raw matchbox_socket's one-way time.
//!
//! `cargo bench --bench replication`; see BENCHMARKS.md for figures.

#[path = "support/common.rs"]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::ReplicationConfig;
use bevy_peersync::transport::{MemoryTransport, Transport, TransportIo};
use bevy_peersync::{Channel, MemoryNetwork, SocketState};
use bytes::Bytes;
use common::{percentile, raw_pair, single_threaded};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use peersync_lobby::{LobbyConfig, LobbyThread};
use serde::{Deserialize, Serialize};

const DT: Duration = Duration::from_nanos(16_666_667);

/// Counts the bytes an app sends on the unreliable channel.
struct Counting {
    inner: MemoryTransport,
    unreliable_bytes: Arc<AtomicUsize>,
}

impl Transport for Counting {
    fn receive(&mut self, now: Duration, io: &mut TransportIo) {
        self.inner.receive(now, io);
    }
    fn send(&mut self, io: &mut TransportIo) {
        let bytes: usize = io
            .outgoing
            .iter()
            .filter(|p| p.channel == Channel::Unreliable)
            .map(|p| p.bytes.len())
            .sum();
        self.unreliable_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inner.send(io);
    }
    fn state(&self) -> SocketState {
        self.inner.state()
    }
    fn close(&mut self) {
        self.inner.close();
    }
}

fn sim_app(socket: PeerSocket) -> App {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, PeersyncPlugin::with_socket(socket)))
        .insert_resource(TimeUpdateStrategy::ManualDuration(DT))
        // One network tick per frame.
        .insert_resource(ReplicationConfig {
            tick_rate: 0.0,
            ..Default::default()
        })
        .replicate_codec::<Transform>(TransformCodec::default());
    app.finish();
    app.cleanup();
    single_threaded(&mut app);
    app
}

/// Owner A with `n` entities and receiver B, connected and in sync.
fn pair(n: usize) -> (App, App, MemoryNetwork, Arc<AtomicUsize>) {
    let net = MemoryNetwork::new(1);
    let bytes = Arc::new(AtomicUsize::new(0));
    let mut a = sim_app(PeerSocket::new(Counting {
        inner: net.join(),
        unreliable_bytes: bytes.clone(),
    }));
    let mut b = sim_app(PeerSocket::new(net.join()));
    for i in 0..n {
        a.world_mut()
            .spawn((Replicated, Transform::from_xyz(i as f32 * 0.1, 1.0, 2.0)));
    }
    for _ in 0..200 {
        a.update();
        b.update();
        net.advance(DT);
        let world = b.world_mut();
        if world.query::<&NetId>().iter(world).count() == n {
            return (a, b, net, bytes);
        }
    }
    panic!("the receiver did not get {n} entities");
}

/// Moves every owned entity, as a game's movement system would.
fn move_all(app: &mut App, frame: u32) {
    let world = app.world_mut();
    let t = frame as f32 * 0.016;
    let mut query = world.query_filtered::<&mut Transform, With<Replicated>>();
    for (i, mut transform) in query.iter_mut(world).enumerate() {
        let phase = i as f32 * 0.01;
        transform.translation = Vec3::new((t + phase).sin() * 50.0, (t * 0.5).cos() * 20.0, phase);
        transform.rotation = Quat::from_rotation_y(t + phase);
    }
}

fn idle_frame(c: &mut Criterion) {
    let (mut a, _b, net, _) = pair(0);
    c.bench_function("frame/no_entities", |bench| {
        bench.iter(|| {
            a.update();
            net.advance(DT);
        })
    });
}

fn ticks(c: &mut Criterion) {
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("tick");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for n in [1_000usize, 10_000] {
        let (mut a, mut b, net, bytes) = pair(n);
        let mut frame = 0;
        let mut sent = (0usize, 0usize); // bytes, ticks
        group.bench_function(BenchmarkId::new("owner_collect_encode_send", n), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    frame += 1;
                    move_all(&mut a, frame);
                    let before = bytes.load(Ordering::Relaxed);
                    let start = Instant::now();
                    a.update();
                    total += start.elapsed();
                    sent.0 += bytes.load(Ordering::Relaxed) - before;
                    sent.1 += 1;
                    net.advance(DT);
                    b.update();
                }
                total
            })
        });
        group.bench_function(BenchmarkId::new("receiver_decode_apply", n), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    frame += 1;
                    move_all(&mut a, frame);
                    a.update();
                    net.advance(DT);
                    let start = Instant::now();
                    b.update();
                    total += start.elapsed();
                }
                total
            })
        });
        summary.push(format!(
            "{n} entities: {:.2} bytes per entity per tick on the wire (all headers included)",
            sent.0 as f64 / sent.1.max(1) as f64 / n as f64
        ));

        // Baseline: one bincode message per entity, whole Vec3 + Quat.
        #[derive(Serialize, Deserialize)]
        struct Plain {
            entity: u64,
            translation: Vec3,
            rotation: Quat,
        }
        let transforms: Vec<(u64, Transform)> = {
            let world = a.world_mut();
            let mut query = world.query::<(Entity, &Transform)>();
            query.iter(world).map(|(e, t)| (e.to_bits(), *t)).collect()
        };
        let config = bincode::config::standard();
        let mut encoded: Vec<Vec<u8>> = Vec::new();
        group.bench_function(BenchmarkId::new("baseline_bincode_encode", n), |bench| {
            bench.iter(|| {
                encoded = transforms
                    .iter()
                    .map(|(entity, t)| {
                        let plain = Plain {
                            entity: *entity,
                            translation: t.translation,
                            rotation: t.rotation,
                        };
                        bincode::serde::encode_to_vec(&plain, config).unwrap()
                    })
                    .collect();
            })
        });
        let mut world = World::new();
        let targets: HashMap<u64, Entity> = transforms
            .iter()
            .map(|(id, t)| (*id, world.spawn(*t).id()))
            .collect();
        group.bench_function(
            BenchmarkId::new("baseline_bincode_decode_apply", n),
            |bench| {
                bench.iter(|| {
                    for message in &encoded {
                        let (plain, _): (Plain, usize) =
                            bincode::serde::decode_from_slice(message, config).unwrap();
                        if let Some(mut t) = world.get_mut::<Transform>(targets[&plain.entity]) {
                            t.translation = plain.translation;
                            t.rotation = plain.rotation;
                        }
                    }
                })
            },
        );
        // Each message also pays a frame (tag, kind, length) in the same framing.
        let baseline: usize = encoded.iter().map(|m| m.len() + 3).sum();
        summary.push(format!(
            "{n} entities: baseline {:.2} bytes per entity per tick (bincode + 3 bytes of framing)",
            baseline as f64 / n as f64
        ));
    }
    group.finish();
    for line in summary {
        eprintln!("{line}");
    }
}

// ---------------------------------------------------------------- one-way latency

#[derive(Component, Serialize, Deserialize, Clone, Copy, PartialEq)]
struct Probe(u64);

#[derive(Resource, Clone, Default)]
struct Latency {
    requested: Arc<AtomicU64>,
    sent_at: Arc<Mutex<HashMap<u64, Instant>>>,
    seen: Arc<AtomicU64>,
    samples: Arc<Mutex<Vec<Duration>>>,
}

fn probe_app(url: &str, latency: Latency) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        PeersyncPlugin::new(MatchboxConfig::new(url)),
    ))
    .insert_resource(ReplicationConfig {
        tick_rate: 0.0,
        ..Default::default()
    })
    .replicate::<Probe>()
    .insert_resource(latency)
    .add_systems(Update, (change_probe, see_probe));
    app.finish();
    app.cleanup();
    single_threaded(&mut app);
    app
}

/// On the host: spawn the probe, and set it to each requested value.
fn change_probe(
    mut commands: Commands,
    peers: Res<ConnectedPeers>,
    latency: Res<Latency>,
    mut probe: Query<&mut Probe, With<Replicated>>,
    mut spawned: Local<bool>,
) {
    if !peers.is_host() || peers.is_empty() {
        return;
    }
    if !*spawned {
        commands.spawn((Replicated, Probe(0)));
        *spawned = true;
        return;
    }
    let requested = latency.requested.load(Ordering::Acquire);
    if let Ok(mut probe) = probe.single_mut()
        && probe.0 != requested
    {
        probe.0 = requested;
        latency
            .sent_at
            .lock()
            .unwrap()
            .insert(requested, Instant::now());
    }
}

/// On the other peer: time each new value as it becomes visible to the game.
fn see_probe(
    peers: Res<ConnectedPeers>,
    latency: Res<Latency>,
    probe: Query<&Probe, Changed<Probe>>,
) {
    if peers.is_host() {
        return;
    }
    for probe in &probe {
        if let Some(sent) = latency.sent_at.lock().unwrap().remove(&probe.0) {
            latency.samples.lock().unwrap().push(sent.elapsed());
        }
        latency.seen.store(probe.0, Ordering::Release);
    }
}

fn one_way(c: &mut Criterion) {
    let lobby = LobbyThread::spawn(LobbyConfig::local()).unwrap();
    let url = |room: &str| format!("ws://{}/{room}", lobby.local_addr());
    let mut group = c.benchmark_group("one_way");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));

    // Raw: A sends on the unreliable channel, B's polling thread timestamps the arrival.
    let (mut a, mut b) = raw_pair(&url("raw-one-way"));
    let peer = a.connected_peers().next().unwrap();
    let arrived = Arc::new(Mutex::new(None::<Instant>));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (arrived, stop) = (arrived.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !b.channel_mut(1).receive().is_empty() {
                    *arrived.lock().unwrap() = Some(Instant::now());
                }
                std::thread::yield_now();
            }
        })
    };
    let mut raw_samples = Vec::new();
    group.bench_function("raw_matchbox", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                *arrived.lock().unwrap() = None;
                let start = Instant::now();
                a.channel_mut(1)
                    .try_send(Bytes::from_static(b"probe"), peer)
                    .unwrap();
                let at = loop {
                    if let Some(at) = *arrived.lock().unwrap() {
                        break at;
                    }
                    std::thread::sleep(Duration::from_micros(20));
                };
                raw_samples.push(at - start);
                total += at - start;
            }
            total
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();

    // Through the plugin: two apps updating freely on their own threads.
    let latency = Latency::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let threads: Vec<JoinHandle<()>> = (0..2)
        .map(|_| {
            let (url, latency, stop, ready) = (
                url("plugin-one-way"),
                latency.clone(),
                stop.clone(),
                ready.clone(),
            );
            std::thread::spawn(move || {
                let mut app = probe_app(&url, latency);
                let mut counted = false;
                while !stop.load(Ordering::Relaxed) {
                    app.update();
                    let world = app.world_mut();
                    if !counted && world.query::<&Probe>().iter(world).count() == 1 {
                        counted = true;
                        ready.fetch_add(1, Ordering::Release);
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Acquire) < 2 {
        assert!(Instant::now() < deadline, "the probe did not replicate");
        std::thread::sleep(Duration::from_millis(5));
    }
    group.bench_function("plugin_change_to_applied", |bench| {
        bench.iter_custom(|iters| {
            latency.samples.lock().unwrap().clear();
            for _ in 0..iters {
                let id = latency.requested.fetch_add(1, Ordering::AcqRel) + 1;
                while latency.seen.load(Ordering::Acquire) < id {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            latency.samples.lock().unwrap().iter().sum()
        })
    });
    let mut plugin_samples = std::mem::take(&mut *latency.samples.lock().unwrap());
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    group.finish();
    if !plugin_samples.is_empty() && !raw_samples.is_empty() {
        eprintln!(
            "one way: p50 raw {:?}, plugin {:?} (+{:?}); p99 raw {:?}, plugin {:?}",
            percentile(&mut raw_samples, 0.5),
            percentile(&mut plugin_samples, 0.5),
            percentile(&mut plugin_samples, 0.5).saturating_sub(percentile(&mut raw_samples, 0.5)),
            percentile(&mut raw_samples, 0.99),
            percentile(&mut plugin_samples, 0.99),
        );
    }
}

criterion_group!(benches, idle_frame, ticks, one_way);
criterion_main!(benches);
