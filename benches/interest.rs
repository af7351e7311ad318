//! What interest management costs the owner and saves on the wire, against the same room
//! without it, measured in the same run:
//!
//! - an owner with 10 000 entities spread over a 1 km × 1 km field, every one moving every
//!   tick, and four other peers, each with a viewpoint somewhere on the field;
//! - per network tick: the owner's frame (collect, interest phase, encode, send) and the bytes
//!   it sends (both channels, all four peers);
//! - three rooms: no rule at all (the baseline: everything to everyone), a grid rule of radius
//!   50 m (each peer sees about 0.8 % of the field), and an `Audience::Everyone` on every
//!   entity (the interest phase runs every tick but hides nothing: its overhead alone).
//!
//! `cargo bench --bench interest`; see BENCHMARKS.md ("Interest management") for figures.

#[path = "support/common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_peersync::MemoryNetwork;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::ReplicationConfig;
use common::{Counting, Traffic, single_threaded};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const DT: Duration = Duration::from_nanos(16_666_667);
const ENTITIES: usize = 10_000;
const VIEWERS: usize = 4;
const FIELD: f32 = 1000.0;

/// Where an entity of the owner sways around.
#[derive(Component)]
struct Home(Vec3);

/// The rules of a room.
#[derive(Clone, Copy, Debug)]
enum Rules {
    None,
    Grid,
    EveryoneAudience,
}

fn app(socket: PeerSocket, rules: Rules) -> App {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, PeersyncPlugin::with_socket(socket)))
        .insert_resource(TimeUpdateStrategy::ManualDuration(DT))
        // One network tick per frame, no bandwidth budget (it would hide what the rules save).
        .insert_resource(ReplicationConfig {
            tick_rate: 0.0,
            bandwidth_budget: None,
            ..Default::default()
        })
        .replicate_codec::<Transform>(TransformCodec::default());
    if matches!(rules, Rules::Grid) {
        app.grid_interest(GridInterest::new(50.0));
    }
    app.finish();
    app.cleanup();
    single_threaded(&mut app);
    app
}

/// Where entity `i` sways around: a square lattice over the field.
fn home(i: usize) -> Vec3 {
    let side = (ENTITIES as f32).sqrt().ceil() as usize;
    let step = FIELD / side as f32;
    Vec3::new(
        (i % side) as f32 * step + step / 2.0,
        (i / side) as f32 * step + step / 2.0,
        0.0,
    )
}

/// The owner, its viewers, the network, and the owner's byte count, once every viewer holds
/// what it is shown (its count stops growing).
struct Room {
    owner: App,
    viewers: Vec<App>,
    net: MemoryNetwork,
    sent: Arc<Traffic>,
    frame: u32,
}

impl Room {
    fn new(rules: Rules) -> Self {
        let net = MemoryNetwork::new(7);
        let sent = Arc::new(Traffic::default());
        let mut owner = app(
            PeerSocket::new(Counting {
                inner: net.join(),
                traffic: sent.clone(),
            }),
            rules,
        );
        let mut viewers: Vec<App> = (0..VIEWERS)
            .map(|_| app(PeerSocket::new(net.join()), rules))
            .collect();
        for (index, viewer) in viewers.iter_mut().enumerate() {
            let at = Vec3::new(
                FIELD * (0.2 + 0.2 * index as f32),
                FIELD * (0.8 - 0.2 * index as f32),
                0.0,
            );
            viewer
                .world_mut()
                .spawn((Replicated, Viewpoint, Transform::from_translation(at)));
        }
        for i in 0..ENTITIES {
            let mut entity = owner.world_mut().spawn((
                Replicated,
                Home(home(i)),
                Transform::from_translation(home(i)),
            ));
            if matches!(rules, Rules::EveryoneAudience) {
                entity.insert(Audience::Everyone);
            }
        }
        let mut room = Room {
            owner,
            viewers,
            net,
            sent,
            frame: 0,
        };
        for _ in 0..300 {
            room.step();
        }
        room
    }

    /// Moves every entity of the owner, as a game's movement system would.
    fn move_all(&mut self) {
        self.frame += 1;
        let t = self.frame as f32 * 0.016;
        let world = self.owner.world_mut();
        // Its own entities only: the viewers' viewpoints are here too, as replicas.
        let mut query = world.query::<(&Home, &mut Transform)>();
        for (home, mut transform) in query.iter_mut(world) {
            let sway = (t + home.0.x * 0.01).sin();
            transform.translation = home.0 + Vec3::new(sway, sway * 0.5, 0.0);
        }
    }

    /// One frame everywhere; returns the owner's frame time.
    fn step(&mut self) -> Duration {
        self.move_all();
        let start = Instant::now();
        self.owner.update();
        let owner_time = start.elapsed();
        for viewer in &mut self.viewers {
            viewer.update();
        }
        self.net.advance(DT);
        owner_time
    }
}

fn ticks(c: &mut Criterion) {
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("interest");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    for rules in [Rules::None, Rules::Grid, Rules::EveryoneAudience] {
        let mut room = Room::new(rules);
        let mut sent = (0usize, 0usize); // bytes, ticks
        let name = format!("{rules:?}");
        group.bench_function(BenchmarkId::new("owner_tick", &name), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let before = room.sent.total();
                    total += room.step();
                    sent.0 += room.sent.total() - before;
                    sent.1 += 1;
                }
                total
            })
        });
        let held: Vec<usize> = room
            .viewers
            .iter_mut()
            .map(|viewer| {
                let world = viewer.world_mut();
                world
                    .query_filtered::<(), (With<Replicated>, Without<Viewpoint>)>()
                    .iter(world)
                    .count()
            })
            .collect();
        summary.push(format!(
            "{name}: {:.0} bytes per tick from the owner to {VIEWERS} peers; the peers hold {held:?} \
             of its {ENTITIES} entities",
            sent.0 as f64 / sent.1.max(1) as f64
        ));
    }
    group.finish();
    for line in summary {
        eprintln!("{line}");
    }
}

criterion_group!(benches, ticks);
criterion_main!(benches);
