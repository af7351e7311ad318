//! Bandwidth budget (issue 13): with a budget far below what the owner's changes need, every
//! entity still reaches the receiver within a bounded number of ticks, entities of higher
//! [`ReplicationPriority`] go more often, reliable traffic is not held back, and once the
//! entities rest the receiver catches up with all of them.
//!
//! The figures in BENCHMARKS.md ("Bandwidth budget") are printed by these tests:
//!
//! ```sh
//! cargo test --test integration budget -- --nocapture --test-threads=1
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::harness::{collect, inbox};
use crate::support::sim::*;
use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::{PeerReplicationStats, ReplicationConfig, ReplicationStats};
use serde::{Deserialize, Serialize};

/// Entities the owner moves every frame.
const ENTITIES: u32 = 200;
/// What one changed entity costs in a mutation message: its 1–2 byte number and its [`Stamp`]
/// (a varint frame of 1–3 bytes and 12 bytes of payload), rounded up.
const ENTRY_BYTES: f64 = 17.0;
/// Bytes per second for each peer: about 330 bytes a tick at 60 Hz, a tenth of the ~3.4 KB the
/// 200 entities change every tick.
const BUDGET: u32 = 20_000;
const LATENCY: Duration = Duration::from_millis(50);

/// The owner's frame number when it last wrote the entity, with a payload the size of a
/// quantized transform.
#[derive(Component, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Stamp {
    frame: u32,
    payload: [u8; 12],
}

/// On the owner's entities only: written every frame while the script runs.
#[derive(Component)]
struct Moving;

#[derive(Resource, Default)]
struct Script {
    frame: u32,
    stopped: bool,
}

/// A reliable app message sent while mutations are starved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Ping(u32);

fn setup(app: &mut App) {
    setup_with(app, Some(BUDGET));
}

/// The baseline: the same apps with no budget.
fn setup_unlimited(app: &mut App) {
    setup_with(app, None);
}

fn setup_with(app: &mut App, bandwidth_budget: Option<u32>) {
    replicate_basics(app);
    app.replicate::<Stamp>()
        .insert_resource(ReplicationConfig {
            bandwidth_budget,
            ..Default::default()
        })
        .init_resource::<Script>()
        .add_systems(Update, stamp);
    collect::<Ping>(app, Channel::Reliable);
}

fn stamp(mut script: ResMut<Script>, mut stamps: Query<&mut Stamp, With<Moving>>) {
    script.frame += 1;
    if script.stopped {
        return;
    }
    for mut stamp in &mut stamps {
        stamp.frame = script.frame;
    }
}

/// Frames a packet spends on the link.
fn latency_frames() -> u32 {
    (LATENCY.as_secs_f64() / DT.as_secs_f64()).ceil() as u32
}

/// Ticks the budget needs to send every entity once when all have equal priority.
fn round_ticks() -> u32 {
    let per_tick = f64::from(BUDGET) * DT.as_secs_f64();
    // A message header (at most 20 bytes) comes out of each tick's share.
    (f64::from(ENTITIES) * ENTRY_BYTES / (per_tick - 20.0)).ceil() as u32
}

/// Two peers on a 50 ms link set up by `setup`; the first owns `ENTITIES` moving entities,
/// `high` of them (the first ones) with priority `boost`; returns once the second holds them
/// all and two seconds have passed (the byte counts' one-second window is full).
fn room(setup: fn(&mut App), high: u32, boost: f32) -> Sim {
    let conditioner = LinkConditioner {
        latency: LATENCY,
        ..LinkConditioner::PERFECT
    };
    let mut sim = Sim::new(7, conditioner, 2, setup);
    sim.connect_all();
    let world = sim.apps[0].world_mut();
    for index in 0..ENTITIES {
        let mut entity = world.spawn((
            Replicated,
            Moving,
            Stamp {
                frame: 0,
                payload: [index as u8; 12],
            },
        ));
        if index < high {
            entity.insert(ReplicationPriority(boost));
        }
    }
    sim.run_until(
        Duration::from_secs(5),
        "the receiver holds every entity",
        |sim| replica_frames(&mut sim.apps[1]).len() == ENTITIES as usize,
    );
    sim.run_for(Duration::from_secs(2));
    sim
}

/// [`room`] with the starved budget.
fn starved(high: u32, boost: f32) -> Sim {
    room(setup, high, boost)
}

/// Bytes per second the owner sent the receiver over the last second, every header included.
fn upload(sim: &mut Sim) -> f32 {
    let world = sim.apps[0].world_mut();
    let mut stats = world.query::<&PeerStats>();
    stats.iter(world).map(|s| s.sent_bytes_per_sec).sum()
}

/// The frame each replica on `app` was last written at by its owner, by net id.
fn replica_frames(app: &mut App) -> BTreeMap<u64, u32> {
    let world = app.world_mut();
    let mut query = world.query_filtered::<(&NetId, &Stamp), Without<Moving>>();
    query
        .iter(world)
        .map(|(id, stamp)| (id.0, stamp.frame))
        .collect()
}

/// The first `high` entities' net ids (spawn order).
fn owner_ids(app: &mut App) -> Vec<u64> {
    let world = app.world_mut();
    let mut query = world.query_filtered::<(&NetId, &Stamp), With<Moving>>();
    let mut ids: Vec<(u8, u64)> = query
        .iter(world)
        .map(|(id, stamp)| (stamp.payload[0], id.0))
        .collect();
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// What the receiver saw over some frames: per entity, how many updates arrived and the oldest
/// its value got (frames behind the owner).
#[derive(Default)]
struct Seen {
    updates: BTreeMap<u64, u32>,
    oldest: BTreeMap<u64, u32>,
}

impl Seen {
    fn max_age(&self, ids: impl IntoIterator<Item = u64>) -> u32 {
        ids.into_iter().map(|id| self.oldest[&id]).max().unwrap()
    }

    fn mean_updates(&self, ids: &[u64]) -> f64 {
        ids.iter()
            .map(|id| f64::from(self.updates[id]))
            .sum::<f64>()
            / ids.len() as f64
    }
}

/// Steps `frames` frames, watching the receiver's replicas.
fn watch(sim: &mut Sim, frames: u32) -> Seen {
    let mut seen = Seen::default();
    let mut last = replica_frames(&mut sim.apps[1]);
    for _ in 0..frames {
        sim.step();
        let owner_frame = sim.apps[0].world().resource::<Script>().frame;
        let now = replica_frames(&mut sim.apps[1]);
        for (id, frame) in &now {
            let updates = seen.updates.entry(*id).or_default();
            if last.get(id) != Some(frame) {
                *updates += 1;
            }
            let age = owner_frame - frame;
            let oldest = seen.oldest.entry(*id).or_default();
            *oldest = (*oldest).max(age);
        }
        last = now;
    }
    seen
}

/// The owner's budget figures for the receiver.
fn budget_stats(sim: &Sim) -> PeerReplicationStats {
    let receiver = local_id(&sim.apps[1]);
    *sim.apps[0]
        .world()
        .resource::<ReplicationStats>()
        .peer(receiver)
        .expect("the owner keeps figures for the receiver")
}

#[test]
fn under_a_starved_budget_every_entity_is_updated_within_a_bounded_number_of_ticks() {
    let mut baseline = room(setup_unlimited, 0, 1.0);
    let baseline_seen = watch(&mut baseline, 300);
    let baseline_age = baseline_seen.max_age(baseline_seen.oldest.keys().copied());
    let baseline_upload = upload(&mut baseline);
    let mut sim = starved(0, 1.0);
    let seen = watch(&mut sim, 300);
    let ids: Vec<u64> = seen.oldest.keys().copied().collect();
    assert_eq!(ids.len(), ENTITIES as usize);
    let max_age = seen.max_age(ids.iter().copied());
    let round = round_ticks();
    let stats = budget_stats(&sim);
    let fewest = *seen.updates.values().min().unwrap();
    let sent = upload(&mut sim);
    println!(
        "no budget: max staleness on the receiver {baseline_age} frames, upload \
         {baseline_upload:.0} B/s"
    );
    println!(
        "budget {BUDGET} B/s for {ENTITIES} entities changing every tick (a tenth of the demand): \
         max staleness on the receiver {max_age} frames (a round of all entities: {round} ticks, \
         link {} frames); fewest updates of an entity in 300 frames: {fewest}; upload {sent:.0} \
         B/s; sender: longest wait {} ticks, {} values waiting, {} deferrals in all",
        latency_frames(),
        stats.longest_wait,
        stats.waiting,
        stats.deferred,
    );
    assert!(
        sent <= BUDGET as f32 * 1.25,
        "the owner should send about its budget of {BUDGET} B/s (plus packet headers and acks), \
         sent {sent:.0} B/s"
    );
    assert!(
        stats.waiting > 0,
        "the budget should be too small for every change, so values wait"
    );
    let bound = round + latency_frames() + 2;
    assert!(
        max_age <= bound,
        "with equal priorities each entity should be sent once per round of {round} ticks: \
         no replica should be more than {bound} frames behind its owner, one was {max_age}"
    );
    assert!(
        fewest >= 300 / bound - 1,
        "each entity should be updated about every {round} ticks, one was updated {fewest} \
         times in 300 frames"
    );

    // Once the entities rest, the budget drains what waits and the receiver catches up.
    sim.apps[0].world_mut().resource_mut::<Script>().stopped = true;
    let took = sim.run_until(
        Duration::from_secs(2),
        "the receiver holds every entity's last value",
        |sim| {
            let owner: BTreeMap<u64, u32> = {
                let world = sim.apps[0].world_mut();
                let mut query = world.query_filtered::<(&NetId, &Stamp), With<Moving>>();
                query.iter(world).map(|(id, s)| (id.0, s.frame)).collect()
            };
            replica_frames(&mut sim.apps[1]) == owner
        },
    );
    let frames = (took.as_secs_f64() / DT.as_secs_f64()).round() as u32;
    println!("after the last change the receiver caught up in {frames} frames");
    assert!(
        frames <= round + latency_frames() + 2,
        "what waited should go within a round of {round} ticks once nothing changes, took \
         {frames} frames"
    );
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        budget_stats(&sim).waiting,
        0,
        "entities at rest leave nothing waiting"
    );
}

#[test]
fn a_higher_priority_entity_is_updated_more_often_under_the_same_budget() {
    const HIGH: u32 = 10;
    let mut sim = starved(HIGH, 8.0);
    let ids = owner_ids(&mut sim.apps[0]);
    let (high, low) = ids.split_at(HIGH as usize);
    let seen = watch(&mut sim, 300);
    let high_updates = seen.mean_updates(high);
    let low_updates = seen.mean_updates(low);
    let high_age = seen.max_age(high.iter().copied());
    let low_age = seen.max_age(low.iter().copied());
    println!(
        "{HIGH} entities of priority 8 among {ENTITIES}: updated {high_updates:.1} times in 300 \
         frames (max staleness {high_age} frames), the others {low_updates:.1} times (max \
         staleness {low_age} frames)"
    );
    assert!(
        high_updates >= 4.0 * low_updates,
        "priority 8 should be updated several times as often as priority 1: \
         {high_updates:.1} vs {low_updates:.1} updates"
    );
    // The others share what the high ones leave: 10 × 8 + 190 = 270 shares, a tick sends
    // about a round's worth of 200 over `round` ticks.
    let bound = round_ticks() * 270 / ENTITIES + latency_frames() + 2;
    assert!(
        low_age <= bound,
        "the priority-1 entities should still be updated, each within {bound} frames; one was \
         {low_age} frames behind"
    );
}

#[test]
fn reliable_traffic_is_not_held_back_by_starved_mutations() {
    let mut sim = starved(0, 1.0);
    assert!(
        budget_stats(&sim).waiting > 0,
        "mutations should be starved when the reliable traffic starts"
    );
    let world = sim.apps[0].world_mut();
    let labelled = {
        let mut query = world.query_filtered::<(Entity, &NetId), With<Moving>>();
        let (entity, id) = query.iter(world).next().map(|(e, id)| (e, *id)).unwrap();
        world.entity_mut(entity).insert(Tag("shield".into()));
        id.0
    };
    let fresh = world
        .spawn((
            Replicated,
            Health(42),
            Stamp {
                frame: 0,
                payload: [0; 12],
            },
        ))
        .id();
    sim.apps[0]
        .world_mut()
        .run_system_once(|mut pings: PeerMessageWriter<Ping>| {
            pings.broadcast(&Ping(1)).unwrap();
        })
        .unwrap();
    let took = sim.run_until(
        Duration::from_secs(1),
        "the spawn, the insertion and the message reach the receiver",
        |sim| {
            let receiver = &mut sim.apps[1];
            let pinged = !inbox::<Ping>(receiver).is_empty();
            let world = receiver.world_mut();
            let mut tags = world.query::<(&NetId, &Tag)>();
            let tagged = tags.iter(world).any(|(id, _)| id.0 == labelled);
            let mut healths = world.query::<&Health>();
            let spawned = healths.iter(world).any(|health| health.0 == 42);
            pinged && tagged && spawned
        },
    );
    let frames = (took.as_secs_f64() / DT.as_secs_f64()).round() as u32;
    let stats = budget_stats(&sim);
    println!(
        "reliable traffic under starved mutations ({} values waiting): arrived in {frames} \
         frames on a {}-frame link",
        stats.waiting,
        latency_frames()
    );
    assert!(
        frames <= latency_frames() + 2,
        "a spawn, an insertion and a reliable message should arrive within the link's {} \
         frames plus a tick or two whatever the mutations' backlog, took {frames}",
        latency_frames()
    );
    assert!(
        sim.apps[0].world().get::<NetId>(fresh).is_some(),
        "the new entity was announced"
    );
}
