//! Replication costs, each against a baseline measured in the same run:
//!
//! - per network tick with N entities whose transform (Vec3 + Quat) changes every tick: the
//!   owner's frame (collect + encode + pack + send) and a receiver's frame (decode + apply), and
//!   the bytes per entity on the wire; baseline: the same transforms with plain bincode, one
//!   message per entity (whole component, no quantization), encoded and decoded + applied;
//! - the same workload through bevy_replicon 0.42 (`support/replicon.rs`): its server's tick
//!   against our owner's, its client's against our receiver's, the bytes that cross, at 1k and
//!   10k entities and with 4 receivers;
//! - one-way latency over real WebRTC on loopback: a change on app A until it is applied on
//!   app B (apps updating freely), against raw matchbox_socket's one-way time.
//!
//! `cargo bench --bench replication`; see BENCHMARKS.md for figures.

#[path = "support/common.rs"]
mod common;
#[path = "support/replicon.rs"]
mod replicon;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_peersync::MemoryNetwork;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::ReplicationConfig;
use bytes::Bytes;
use common::{Counting, Traffic, percentile, raw_pair, single_threaded};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use peersync_lobby::{LobbyConfig, LobbyThread};
use replicon::{RepliconReplicated, RepliconRoom, TransformEncoding};
use serde::{Deserialize, Serialize};

const DT: Duration = Duration::from_nanos(16_666_667);

fn sim_app(socket: PeerSocket, deltas: bool) -> App {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, PeersyncPlugin::with_socket(socket)))
        .insert_resource(TimeUpdateStrategy::ManualDuration(DT))
        // One network tick per frame, every change sent (no bandwidth budget: the figures are
        // per entity moved, and the budget would send a fraction of them).
        .insert_resource(ReplicationConfig {
            tick_rate: 0.0,
            bandwidth_budget: None,
            deltas,
            ..Default::default()
        })
        .replicate_codec::<Transform>(TransformCodec::default());
    app.finish();
    app.cleanup();
    single_threaded(&mut app);
    app
}

/// An owner with `n` entities and its receivers, connected and in sync, each app counting what
/// it sends.
struct Room {
    owner: App,
    receivers: Vec<App>,
    net: MemoryNetwork,
    owner_sent: Arc<Traffic>,
    /// What the first receiver sends.
    receiver_sent: Arc<Traffic>,
}

impl Room {
    /// `deltas`: changed transforms go as differences (the default), or whole (the design
    /// before them).
    fn new(n: usize, receivers: usize, deltas: bool) -> Self {
        let net = MemoryNetwork::new(1);
        let counted = |traffic: &Arc<Traffic>| {
            PeerSocket::new(Counting {
                inner: net.join(),
                traffic: traffic.clone(),
            })
        };
        let owner_sent = Arc::new(Traffic::default());
        let receiver_sent = Arc::new(Traffic::default());
        let mut owner = sim_app(counted(&owner_sent), deltas);
        let receivers: Vec<App> = (0..receivers)
            .map(|i| {
                let traffic = if i == 0 {
                    receiver_sent.clone()
                } else {
                    Arc::new(Traffic::default())
                };
                sim_app(counted(&traffic), deltas)
            })
            .collect();
        for i in 0..n {
            owner
                .world_mut()
                .spawn((Replicated, Transform::from_xyz(i as f32 * 0.1, 1.0, 2.0)));
        }
        let mut room = Self {
            owner,
            receivers,
            net,
            owner_sent,
            receiver_sent,
        };
        for _ in 0..200 {
            room.owner.update();
            room.update_receivers();
            room.net.advance(DT);
            let synced = room.receivers.iter_mut().all(|app| {
                let world = app.world_mut();
                world.query::<&NetId>().iter(world).count() == n
            });
            if synced {
                return room;
            }
        }
        panic!("the receivers did not get {n} entities");
    }

    fn update_receivers(&mut self) {
        for app in &mut self.receivers {
            app.update();
        }
    }
}

/// Moves every entity marked `M` (ours or replicon's `Replicated`), as a game's movement system
/// would.
fn move_all<M: Component>(app: &mut App, frame: u32) {
    let world = app.world_mut();
    let t = frame as f32 * 0.016;
    let mut query = world.query_filtered::<&mut Transform, With<M>>();
    for (i, mut transform) in query.iter_mut(world).enumerate() {
        let phase = i as f32 * 0.01;
        transform.translation = Vec3::new((t + phase).sin() * 50.0, (t * 0.5).cos() * 20.0, phase);
        transform.rotation = Quat::from_rotation_y(t + phase);
    }
}

fn idle_frame(c: &mut Criterion) {
    let mut room = Room::new(0, 1, true);
    c.bench_function("frame/no_entities", |bench| {
        bench.iter(|| {
            room.owner.update();
            room.net.advance(DT);
        })
    });
}

/// What crossed during the measured ticks of one owner (or server) and its first receiver.
#[derive(Default)]
struct Crossing {
    /// Owner to the first receiver, every channel.
    bytes: usize,
    /// Of which on the unreliable channel.
    unreliable: usize,
    /// Packets (ours) or messages (replicon's, each a packet for its transport) to the first
    /// receiver.
    packets: usize,
    /// The first receiver back to the owner (acknowledgements).
    back: usize,
    ticks: usize,
}

impl Crossing {
    fn per_entity(&self, bytes: usize, n: usize) -> f64 {
        bytes as f64 / self.ticks.max(1) as f64 / n as f64
    }

    /// The summary line; `None` when the bench did not run (filtered out).
    fn line(&self, who: &str, n: usize) -> Option<String> {
        if self.ticks == 0 {
            return None;
        }
        Some(format!(
            "{n} entities, {who}: {:.2} bytes per entity per tick to a receiver ({:.2} unreliable) \
             in {:.1} packets, {:.1} bytes per tick back",
            self.per_entity(self.bytes, n),
            self.per_entity(self.unreliable, n),
            self.packets as f64 / self.ticks.max(1) as f64,
            self.back as f64 / self.ticks.max(1) as f64,
        ))
    }
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn ticks(c: &mut Criterion) {
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("tick");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for n in [1_000usize, 10_000] {
        let mut room = Room::new(n, 1, true);
        summary.extend(ours_owner(
            &mut group,
            &mut room,
            n,
            "owner_collect_encode_send",
        ));
        ours_receiver(&mut group, &mut room, n, "receiver_decode_apply");
        summary.extend(bincode_baseline(&mut group, &mut room.owner, n));
        drop(room);
        // The design before differences: every changed value whole.
        let mut room = Room::new(n, 1, false);
        summary.extend(ours_owner(&mut group, &mut room, n, "owner_whole_values"));
        ours_receiver(&mut group, &mut room, n, "receiver_whole_values");
        drop(room);
        for encoding in [TransformEncoding::SameCodec, TransformEncoding::Serde] {
            let mut room = RepliconRoom::new(encoding, 1, DT);
            room.spawn_and_sync(n);
            let label = encoding.label();
            summary.extend(replicon_server(
                &mut group,
                &mut room,
                n,
                &format!("{label}_server"),
            ));
            replicon_client(&mut group, &mut room, n, &format!("{label}_client"));
        }
    }
    group.finish();
    for line in summary {
        eprintln!("{line}");
    }
}

/// The owner's frame with every receiver of `room` updating (unmeasured) after it.
fn ours_owner(group: &mut Group, room: &mut Room, n: usize, name: &str) -> Option<String> {
    let receivers = room.receivers.len();
    let mut frame = 0;
    let mut crossing = Crossing::default();
    group.bench_function(BenchmarkId::new(name, n), |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                frame += 1;
                move_all::<Replicated>(&mut room.owner, frame);
                let sent = &room.owner_sent;
                let before = (sent.total(), sent.unreliable(), sent.packets());
                let start = Instant::now();
                room.owner.update();
                total += start.elapsed();
                crossing.bytes += (sent.total() - before.0) / receivers;
                crossing.unreliable += (sent.unreliable() - before.1) / receivers;
                crossing.packets += (sent.packets() - before.2) / receivers;
                crossing.ticks += 1;
                room.net.advance(DT);
                let back = room.receiver_sent.total();
                room.update_receivers();
                crossing.back += room.receiver_sent.total() - back;
            }
            total
        })
    });
    crossing.line(&format!("{name}, {receivers} receiver(s)"), n)
}

/// A receiver's frame after the owner's (unmeasured).
fn ours_receiver(group: &mut Group, room: &mut Room, n: usize, name: &str) {
    let mut frame = 1_000_000;
    group.bench_function(BenchmarkId::new(name, n), |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                frame += 1;
                move_all::<Replicated>(&mut room.owner, frame);
                room.owner.update();
                room.net.advance(DT);
                let start = Instant::now();
                room.receivers[0].update();
                total += start.elapsed();
            }
            total
        })
    });
}

/// Replicon's server tick with every client updating (unmeasured) after it.
fn replicon_server(
    group: &mut Group,
    room: &mut RepliconRoom,
    n: usize,
    name: &str,
) -> Option<String> {
    let mut frame = 0;
    let mut crossing = Crossing::default();
    group.bench_function(BenchmarkId::new(name, n), |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                frame += 1;
                move_all::<RepliconReplicated>(&mut room.server, frame);
                let start = Instant::now();
                room.server.update();
                total += start.elapsed();
                let crossed = room.server_to_clients();
                crossing.bytes += crossed.bytes;
                crossing.unreliable += crossed.unreliable;
                crossing.packets += crossed.messages;
                crossing.ticks += 1;
                room.update_clients();
                crossing.back += room.clients_to_server().bytes;
            }
            total
        })
    });
    crossing.line(&format!("{name}, {} client(s)", room.clients.len()), n)
}

/// A replicon client's frame after the server's tick (unmeasured).
fn replicon_client(group: &mut Group, room: &mut RepliconRoom, n: usize, name: &str) {
    let mut frame = 1_000_000;
    group.bench_function(BenchmarkId::new(name, n), |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                frame += 1;
                move_all::<RepliconReplicated>(&mut room.server, frame);
                room.server.update();
                room.server_to_clients();
                let start = Instant::now();
                room.clients[0].app.update();
                total += start.elapsed();
                room.clients_to_server();
            }
            total
        })
    });
}

/// One bincode message per entity, whole Vec3 + Quat: encoded, then decoded and applied.
fn bincode_baseline(group: &mut Group, owner: &mut App, n: usize) -> Option<String> {
    #[derive(Serialize, Deserialize)]
    struct Plain {
        entity: u64,
        translation: Vec3,
        rotation: Quat,
    }
    let transforms: Vec<(u64, Transform)> = {
        let world = owner.world_mut();
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
    (baseline > 0).then(|| {
        format!(
            "{n} entities: baseline {:.2} bytes per entity per tick (bincode + 3 bytes of framing)",
            baseline as f64 / n as f64
        )
    })
}

/// The sender's frame when 4 receivers get every change: our owner against replicon's server
/// with 4 clients.
fn four_receivers(c: &mut Criterion) {
    const RECEIVERS: usize = 4;
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("tick_4_receivers");
    // Each measured frame comes with four unmeasured receiver frames: keep the wall time short.
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    for n in [1_000usize, 10_000] {
        let mut room = Room::new(n, RECEIVERS, true);
        summary.extend(ours_owner(
            &mut group,
            &mut room,
            n,
            "owner_collect_encode_send",
        ));
        drop(room);
        for encoding in [TransformEncoding::SameCodec, TransformEncoding::Serde] {
            let mut room = RepliconRoom::new(encoding, RECEIVERS, DT);
            room.spawn_and_sync(n);
            let name = format!("{}_server", encoding.label());
            summary.extend(replicon_server(&mut group, &mut room, n, &name));
        }
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

criterion_group!(benches, idle_frame, ticks, four_receivers, one_way);
criterion_main!(benches);
