//! Snapshot interpolation over a bad link: an owner moves an entity along a known curve at
//! 60 Hz; a receiver 50 ms ± 20 ms away with 5 % loss shows it smoothly, close to where it
//! was `delay` ago, while the raw replica stutters. Run with `--nocapture` for the figures
//! (BENCHMARKS.md).

use std::time::Duration;

use crate::support::sim::*;
use bevy::prelude::*;
use bevy::time::Real;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::{InterpolationDelay, ReplicationConfig, Snapshots};

/// Moved by its owner along [`curve`].
#[derive(Component)]
struct Mover;

const RADIUS: f32 = 3.0;
/// Radians per second: 4.5 m/s along the circle, 7.5 cm a frame.
const SPIN: f32 = 1.5;

/// Where the entity is at `t` seconds on its owner's clock.
fn curve(t: f64) -> Vec3 {
    let angle = t as f32 * SPIN;
    Vec3::new(angle.cos() * RADIUS, angle.sin() * RADIUS, 0.0)
}

fn link() -> LinkConditioner {
    LinkConditioner {
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(20),
        loss: 0.05,
        ..LinkConditioner::PERFECT
    }
}

fn mover(app: &mut App) {
    replicate_basics(app);
    app.add_systems(
        Update,
        |time: Res<Time<Real>>, mut movers: Query<&mut Transform, With<Mover>>| {
            let t = time.elapsed_secs_f64();
            for mut transform in &mut movers {
                transform.translation = curve(t);
                transform.rotation = Quat::from_rotation_z(t as f32 * SPIN);
            }
        },
    );
}

fn interpolating(app: &mut App) {
    mover(app);
    app.interpolate::<Transform>();
}

fn interpolating_every_frame(app: &mut App) {
    interpolating(app);
    app.insert_resource(ReplicationConfig {
        tick_rate: 0.0,
        ..default()
    });
}

/// What the receiver showed.
#[derive(Debug, Default)]
struct Figures {
    frames: usize,
    /// Frames whose movement differs from the previous frame's by more than half a frame's
    /// travel: a visible stutter (a stop, a double step, a jump back).
    discontinuities: usize,
    /// Distance from the owner's true position `delay` before the receiver's frame, in m.
    errors: Vec<f32>,
    delays: Vec<Duration>,
    buffers: Vec<Duration>,
}

impl Figures {
    fn error_percentile(&self, share: f64) -> f32 {
        if self.errors.is_empty() {
            return f32::NAN;
        }
        let mut errors = self.errors.clone();
        errors.sort_by(f32::total_cmp);
        errors[((errors.len() - 1) as f64 * share) as usize]
    }

    fn mean(durations: &[Duration]) -> Duration {
        durations.iter().sum::<Duration>() / durations.len().max(1) as u32
    }

    fn print(&self, what: &str) {
        if self.errors.is_empty() {
            println!(
                "interpolation figures, {what}: {} frames, {} discontinuities",
                self.frames, self.discontinuities
            );
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let range = |d: &[Duration]| {
            let min = d.iter().min().copied().unwrap_or_default();
            let max = d.iter().max().copied().unwrap_or_default();
            format!(
                "mean {:.1} ms (min {:.1}, max {:.1})",
                ms(Self::mean(d)),
                ms(min),
                ms(max)
            )
        };
        println!(
            "interpolation figures, {what}: {} frames, {} discontinuities; delay behind the \
             owner {}, of which buffer {}; error vs the owner's position at now − delay: \
             median {:.1} mm, p95 {:.1} mm, max {:.1} mm",
            self.frames,
            self.discontinuities,
            range(&self.delays),
            range(&self.buffers),
            self.error_percentile(0.5) * 1000.0,
            self.error_percentile(0.95) * 1000.0,
            self.error_percentile(1.0) * 1000.0,
        );
    }
}

/// Owner 0 moves an entity for `warmup + measured`; what receiver 1 shows during `measured`.
fn run(setup: fn(&mut App), seed: u64) -> (Sim, Figures) {
    let mut sim = Sim::new(seed, link(), 2, setup);
    sim.connect_all();
    sim.apps[0]
        .world_mut()
        .spawn((Replicated, Mover, Transform::default()));
    sim.run_for(Duration::from_secs(3));
    let travel = curve(0.0).distance(curve(1.0 / 60.0));
    let mut figures = Figures::default();
    let mut last: Option<(Vec3, Option<Vec3>)> = None;
    for _ in 0..600 {
        sim.step();
        let receiver = sim.apps[1].world_mut();
        let now = receiver.resource::<Time<Real>>().elapsed();
        let shown = receiver
            .query_filtered::<&Transform, With<Replicated>>()
            .single(receiver)
            .expect("the receiver holds the replica")
            .translation;
        let delay = receiver
            .query::<&InterpolationDelay>()
            .iter(receiver)
            .next()
            .copied();
        if let Some(delay) = delay {
            // The sim's apps started together: the owner's clock is the receiver's.
            let truth = curve(now.saturating_sub(delay.total).as_secs_f64());
            figures.errors.push(shown.distance(truth));
            figures.delays.push(delay.total);
            figures.buffers.push(delay.buffer);
        }
        if let Some((previous, step)) = last {
            let this_step = shown - previous;
            if let Some(step) = step
                && (this_step - step).length() > travel / 2.0
            {
                figures.discontinuities += 1;
            }
            last = Some((shown, Some(this_step)));
        } else {
            last = Some((shown, None));
        }
        figures.frames += 1;
    }
    (sim, figures)
}

fn assert_smooth(figures: &Figures, what: &str) {
    assert!(
        figures.discontinuities <= figures.frames / 100,
        "{what}: an interpolated replica should move without visible stutter over a 50 ± 20 ms \
         link with 5 % loss; {} of {} frames changed speed by more than half a frame's travel",
        figures.discontinuities,
        figures.frames
    );
    assert_eq!(
        figures.errors.len(),
        figures.frames,
        "{what}: the receiver should show the owner's interpolation delay on its Peer entity"
    );
    let p95 = figures.error_percentile(0.95);
    assert!(
        p95 < 0.02,
        "{what}: the replica should be within 2 cm of where the owner had it `delay` ago in \
         95 % of frames (moving 4.5 m/s), got {:.1} mm",
        p95 * 1000.0
    );
    let max = figures.error_percentile(1.0);
    assert!(
        max < 0.25,
        "{what}: even when packets are lost the replica should stay within 25 cm of the \
         owner's path, got {:.1} mm",
        max * 1000.0
    );
    let buffer = Figures::mean(&figures.buffers);
    assert!(
        buffer > Duration::from_millis(20) && buffer < Duration::from_millis(120),
        "{what}: the buffer should cover one 16.7 ms interval and the link's ±20 ms jitter, \
         not much more; got {buffer:?}"
    );
}

#[test]
fn interpolation_hides_jitter_and_loss() {
    let (mut sim, figures) = run(interpolating, 21);
    figures.print("interpolated");
    assert_smooth(&figures, "interpolated");

    // The owner stops: the replica ends exactly where the owner left it, no overshoot held.
    let stopped = {
        let world = sim.apps[0].world_mut();
        let entity = world
            .query_filtered::<Entity, With<Mover>>()
            .single(world)
            .expect("the owner's entity");
        world.entity_mut(entity).remove::<Mover>();
        world.get::<Transform>(entity).expect("moved").translation
    };
    sim.run_for(Duration::from_secs(1));
    let receiver = sim.apps[1].world_mut();
    let (shown, latest) = receiver
        .query::<(&Transform, &Snapshots<Transform>)>()
        .single(receiver)
        .map(|(shown, snapshots)| (shown.translation, snapshots.latest().translation))
        .expect("the replica keeps its buffer");
    assert!(
        shown.distance(latest) < 1e-5,
        "once the owner stopped, the replica should show the newest value received \
         ({latest}), got {shown}"
    );
    assert!(
        shown.distance(stopped) < 0.005,
        "the replica should stop where the owner stopped ({stopped}), got {shown}"
    );
}

#[test]
fn interpolation_works_at_tick_rate_zero() {
    let (_, figures) = run(interpolating_every_frame, 22);
    figures.print("interpolated, tick rate 0");
    assert_smooth(&figures, "tick rate 0");
}

#[test]
fn without_interpolation_the_replica_stutters() {
    let (_, figures) = run(mover, 21);
    figures.print("not interpolated");
    assert!(
        figures.discontinuities > figures.frames / 5,
        "a replica written as values arrive should stutter over a 50 ± 20 ms link with 5 % \
         loss (this is what interpolation is for); only {} of {} frames did",
        figures.discontinuities,
        figures.frames
    );
}
