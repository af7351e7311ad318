//! Snapshot interpolation: remote entities shown a little in the past, moving smoothly between
//! the values their owners sent, instead of jumping to each value as it arrives.
//!
//! Values arrive unevenly: the network adds jitter, loses packets, and an owner's ticks rarely
//! line up with this app's frames, so a replica written as values arrive stutters even when
//! its owner moves it smoothly. Each mutation message carries its owner's clock when the values
//! were collected; mapped to this app's clock with the peer's clock offset
//! ([`PeerStats::clock_offset`](crate::PeerStats::clock_offset)), that says when each value was
//! true. An interpolated component keeps its received values in [`Snapshots<C>`] and shows, in
//! `C`, the value of the moment `now − delay`, interpolated between the two values around it.
//!
//! The delay is per owner and adapts (`interpolation/clock.rs`): the median lateness of its
//! messages (the network's one way, plus the wait for this app's next frame), plus the spread
//! up to their 95th percentile, one send interval and a margin. It grows quickly when packets
//! come later, and shrinks by 1 % of real time when they come earlier again. The share beyond
//! the network's is bounded by [`InterpolationConfig`]; both figures are on each peer's
//! [`InterpolationDelay`].
//!
//! When no newer value is there: if the owner's later messages did not carry the value, it
//! stopped changing and is held (an owner sends a few empty messages after its values stop, to
//! say so). Otherwise the data is late: the value goes on along its last two samples for at most
//! [`InterpolationConfig::max_extrapolation`], then holds; when data resumes (or after
//! [`InterpolationConfig::max_hold`]) it is blended back over
//! [`InterpolationConfig::blend_time`] instead of jumping. A step between two values longer than
//! [`InterpolationConfig::teleport_distance`] is shown as a step at its time.
//!
//! Entities this peer owns are never delayed. Interpolation is each peer's own choice: it is
//! not part of the protocol, and peers that do not interpolate a component see it as before.

mod buffer;
mod clock;
mod impls;

use std::any::{TypeId, type_name};
use std::time::Duration;

use bevy::ecs::component::Mutable;
use bevy::platform::collections::{HashMap, HashSet};
use bevy::prelude::*;
use bevy::time::Real;

use self::buffer::Playhead;
pub use self::buffer::Snapshots;
use self::clock::OwnerClock;
use super::registry::{self, ReplicationRegistry};
use super::{Owner, Replicated, receive};
use crate::net::{ConnectedPeers, Peer, PeerStats, PeersyncSystems};
use crate::peer::PeerId;

/// A value that can be shown between two received ones.
///
/// Implemented for `f32`, `f64`, `Vec2`, `Vec3`, `Vec3A`, `Vec4`, `Quat` and [`Transform`]. A
/// component wrapping one of them forwards to it:
///
/// ```
/// use bevy::prelude::*;
/// use bevy_peersync::prelude::*;
/// use bevy_peersync::replication::Interpolate;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Component, Serialize, Deserialize, Clone)]
/// struct Position(Vec2);
///
/// impl Interpolate for Position {
///     fn interpolate(&self, other: &Self, t: f32) -> Self {
///         Position(self.0.interpolate(&other.0, t))
///     }
///
///     fn distance(&self, other: &Self) -> f32 {
///         self.0.distance(other.0)
///     }
/// }
///
/// let mut app = App::new();
/// app.add_plugins(MinimalPlugins)
///     .add_plugins(PeersyncPlugin::new(MatchboxConfig::new("ws://127.0.0.1:3536/game")))
///     .replicate::<Position>()
///     .interpolate::<Position>();
/// ```
pub trait Interpolate: Clone + Send + Sync + 'static {
    /// The value a share `t` of the way from `self` to `other`. `t` is in 0..=1 between two
    /// received values, and goes beyond 1 when the value is extrapolated past the newest one,
    /// so the formula should carry on sensibly there (a lerp does).
    fn interpolate(&self, other: &Self, t: f32) -> Self;

    /// How far apart two values are, in the units of
    /// [`InterpolationConfig::teleport_distance`]: a step longer than that (a respawn, a
    /// portal) is shown as a step, not swept across. The default, 0, never teleports.
    fn distance(&self, _other: &Self) -> f32 {
        0.0
    }
}

/// How interpolated components are shown. Each peer may choose its own.
#[derive(Resource, Debug, Clone, PartialEq)]
pub struct InterpolationConfig {
    /// Added to what the measured timing calls for, against what the measurement has not seen
    /// yet. Default 5 ms.
    pub margin: Duration,
    /// Least delay added beyond the network's share. Default 0: one send interval plus the
    /// margin is the least the timing ever asks for anyway.
    pub min_delay: Duration,
    /// Most delay added beyond the network's share, whatever the jitter: past it, late values
    /// are extrapolated rather than waited for. Default 250 ms.
    pub max_delay: Duration,
    /// How far past the newest value a value is extrapolated when data is late, before it
    /// holds. Longer hides longer gaps but overshoots further when the owner turned. Default
    /// 100 ms.
    pub max_extrapolation: Duration,
    /// How long it then holds before easing back to the newest value received, for an owner
    /// that went silent altogether. Default 500 ms.
    pub max_hold: Duration,
    /// How long the way back from an extrapolated value to the data takes. Default 100 ms.
    pub blend_time: Duration,
    /// A step between two values longer than this (in [`Interpolate::distance`] units,
    /// world units for [`Transform`]) is shown as a step. Default 5.
    pub teleport_distance: f32,
}

impl Default for InterpolationConfig {
    fn default() -> Self {
        Self {
            margin: Duration::from_millis(5),
            min_delay: Duration::ZERO,
            max_delay: Duration::from_millis(250),
            max_extrapolation: Duration::from_millis(100),
            max_hold: Duration::from_millis(500),
            blend_time: Duration::from_millis(100),
            teleport_distance: 5.0,
        }
    }
}

/// How late this peer shows the interpolated values of a remote peer, on that peer's [`Peer`]
/// entity: for an overlay, and for lag compensation (what a player saw when it acted is what
/// was true `total` ago on the owner).
#[derive(Component, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterpolationDelay {
    /// How long after they were true on their owner its values are shown: the network's one
    /// way plus `buffer`.
    pub total: Duration,
    /// The share interpolation adds: what it costs in latency to hide jitter and loss.
    pub buffer: Duration,
}

/// Where interpolation runs: in `PreUpdate`, in [`PeersyncSystems::Receive`] after the received
/// values are applied, so `Update` sees this frame's shown values. Order systems that read or
/// correct interpolated components before `Update` after it.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterpolationSystems;

/// Turns on interpolation of replicated components.
///
/// Values arrive unevenly: the network adds jitter and loses packets, and an owner's ticks
/// rarely line up with this app's frames, so a replica written as values arrive stutters even
/// when its owner moves it smoothly. Each value's send time on its owner is known (it travels
/// with the values, and is mapped to this app's clock with
/// [`PeerStats::clock_offset`](crate::PeerStats::clock_offset)), so an interpolated component
/// shows the value of the moment `now − delay`, between the two received values around it.
///
/// The delay is per owner and adapts: the median lateness of its messages (the network's one
/// way), plus their spread up to the 95th percentile, one send interval and a margin. It grows
/// within a fraction of a second when packets come later, and shrinks by 1 % of real time when
/// they come earlier again. The share beyond the network's is bounded by
/// [`InterpolationConfig`]; both are shown on each peer's [`InterpolationDelay`].
///
/// With no newer value yet: if the owner's later messages did not carry one, the value stopped
/// changing and is held; otherwise the data is late, and the value goes on along its last two
/// samples for at most [`InterpolationConfig::max_extrapolation`], then holds. When data
/// resumes it is blended back over [`InterpolationConfig::blend_time`] instead of jumping. A
/// step longer than [`InterpolationConfig::teleport_distance`] is shown as a step, at its time.
/// Entities this peer owns are never delayed, and a replica that becomes this peer's own goes
/// on from the newest value received.
///
/// Interpolation is each peer's own choice: it is not part of the protocol.
pub trait InterpolationAppExt {
    /// Shows remote values of `C` smoothly, a little in the past; `C` must be replicated
    /// already. The owner's values stay readable on [`Snapshots<C>`].
    fn interpolate<C>(&mut self) -> &mut Self
    where
        C: Component<Mutability = Mutable> + Interpolate;
}

impl InterpolationAppExt for App {
    fn interpolate<C>(&mut self) -> &mut Self
    where
        C: Component<Mutability = Mutable> + Interpolate,
    {
        let world = self.world_mut();
        let mut playback = world.resource_mut::<Playback>();
        if !playback.components.insert(TypeId::of::<C>()) {
            tracing::warn!("{} is interpolated already", type_name::<C>());
            return self;
        }
        let hooked = registry::set_receive_hook::<C>(
            &mut world.resource_mut::<ReplicationRegistry>(),
            buffer_value::<C>,
        );
        assert!(
            hooked,
            "interpolate::<{0}>() needs {0} replicated first (app.replicate…::<{0}>())",
            type_name::<C>()
        );
        self.add_systems(
            PreUpdate,
            (attach::<C>, show::<C>)
                .chain()
                .after(advance_playback)
                .in_set(InterpolationSystems),
        )
        .add_observer(|removed: On<Remove, C>, mut commands: Commands| {
            if let Ok(mut entity) = commands.get_entity(removed.entity) {
                entity.try_remove::<Snapshots<C>>();
            }
        })
    }
}

/// The send time of the mutation message being applied, and whose.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    sender: PeerId,
    /// On this app's clock; `None` while the sender's clock offset is unknown.
    time: Option<f64>,
}

/// Each owner's timing and play head, and the message being applied.
#[derive(Resource, Default)]
pub(crate) struct Playback {
    owners: HashMap<PeerId, OwnerClock>,
    heads: HashMap<PeerId, Playhead>,
    message: Option<Stamp>,
    /// The interpolated components.
    components: HashSet<TypeId>,
}

/// Sets up the schedule; called by the replication plugin.
pub(crate) fn configure(app: &mut App) {
    app.init_resource::<Playback>()
        .init_resource::<InterpolationConfig>()
        .configure_sets(
            PreUpdate,
            InterpolationSystems
                .in_set(PeersyncSystems::Receive)
                .after(receive::receive),
        )
        .add_systems(PreUpdate, advance_playback.in_set(InterpolationSystems));
}

/// The receiver starts applying a mutation message from `sender` whose values were true at
/// `time_us` on the sender's clock.
pub(crate) fn begin_message(world: &mut World, sender: PeerId, time_us: u64, now: Duration) {
    let Some(playback) = world.get_resource::<Playback>() else {
        return;
    };
    if playback.components.is_empty() {
        return;
    }
    let offset = world
        .resource::<ConnectedPeers>()
        .entity(sender)
        .and_then(|entity| world.get::<PeerStats>(entity))
        .and_then(|stats| stats.clock_offset);
    let time = offset.map(|offset| time_us as f64 / 1e6 - offset);
    let mut playback = world.resource_mut::<Playback>();
    if let Some(time) = time {
        playback
            .owners
            .entry(sender)
            .or_default()
            .record(time, now.as_secs_f64());
    }
    playback.message = Some(Stamp { sender, time });
}

/// The mutation message is applied: values from here on have no send time.
pub(crate) fn end_message(world: &mut World) {
    if let Some(mut playback) = world.get_resource_mut::<Playback>() {
        playback.message = None;
    }
}

/// The receive hook of interpolated components: a value of a replica that has its buffer goes
/// there, with its time; any other is written as usual.
fn buffer_value<C: Component<Mutability = Mutable> + Interpolate>(
    target: &mut EntityWorldMut<'_>,
    value: C,
) -> Option<C> {
    if !target.contains::<C>() {
        return Some(value);
    }
    let stamp = target
        .world()
        .get_resource::<Playback>()
        .and_then(|playback| playback.message);
    let mut snapshots = target.get_mut::<Snapshots<C>>()?;
    match stamp {
        Some(Stamp {
            sender,
            time: Some(time),
        }) => {
            snapshots.push(sender, time, value);
            None
        }
        _ => {
            snapshots.restart(value.clone());
            Some(value)
        }
    }
}

/// Moves each owner's delay toward what its timing calls for and places its play head; shows
/// the delays on the peers' entities.
fn advance_playback(
    time: Res<Time<Real>>,
    config: Res<InterpolationConfig>,
    peers: Res<ConnectedPeers>,
    mut playback: ResMut<Playback>,
    mut delays: Query<(Entity, &Peer, Option<&mut InterpolationDelay>)>,
    mut commands: Commands,
) {
    let now = time.elapsed_secs_f64();
    let dt = time.delta_secs_f64();
    let Playback { owners, heads, .. } = &mut *playback;
    owners.retain(|peer, _| peers.contains(*peer));
    heads.clear();
    for (peer, clock) in owners.iter_mut() {
        let at = clock.advance(dt, &config).map(|delay| now - delay);
        heads.insert(
            *peer,
            Playhead {
                now,
                at,
                newest: clock.newest(),
            },
        );
    }
    for (entity, peer, current) in &mut delays {
        let Some((total, buffer)) = owners.get(&peer.id).and_then(OwnerClock::delay) else {
            continue;
        };
        let delay = InterpolationDelay {
            total: saturating_seconds(total),
            buffer: saturating_seconds(buffer),
        };
        match current {
            Some(mut current) => {
                current.set_if_neq(delay);
            }
            None => {
                commands.entity(entity).insert(delay);
            }
        }
    }
}

/// Replicas that became remote or got `C` get a buffer, starting from the value they have.
#[allow(clippy::type_complexity)]
fn attach<C: Component + Interpolate>(
    fresh: Query<
        (Entity, &Owner, &C),
        (
            With<Replicated>,
            Without<Snapshots<C>>,
            Or<(Added<C>, Changed<Owner>)>,
        ),
    >,
    mut commands: Commands,
) {
    for (entity, owner, value) in &fresh {
        if let Some(peer) = owner.peer() {
            commands
                .entity(entity)
                .try_insert(Snapshots::new(peer, value.clone()));
        }
    }
}

/// Writes the value of each replica's play head into `C`. An entity that became this peer's
/// own goes on from the newest value received, and loses its buffer.
fn show<C: Component<Mutability = Mutable> + Interpolate>(
    time: Res<Time<Real>>,
    config: Res<InterpolationConfig>,
    playback: Res<Playback>,
    mut replicas: Query<(Entity, &Owner, &mut C, &mut Snapshots<C>)>,
    mut commands: Commands,
) {
    let now = time.elapsed_secs_f64();
    for (entity, owner, mut value, mut snapshots) in &mut replicas {
        let Some(peer) = owner.peer() else {
            *value = snapshots.latest().clone();
            commands.entity(entity).try_remove::<Snapshots<C>>();
            continue;
        };
        let head = playback.heads.get(&peer).copied().unwrap_or(Playhead {
            now,
            at: None,
            newest: None,
        });
        // Only a received value counts as a change of the buffer.
        if let Some(shown) = snapshots.bypass_change_detection().show(head, &config) {
            *value = shown;
        }
    }
}

/// Seconds computed from a peer's timestamps as a `Duration`: whatever it sent (a negative, a
/// huge or a NaN value), never a panic, as `Duration::from_secs_f64` would.
fn saturating_seconds(value: f64) -> Duration {
    if value.is_nan() || value <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod seconds_tests {
    use super::*;

    #[test]
    fn delays_from_hostile_timestamps_saturate_instead_of_panicking() {
        assert_eq!(saturating_seconds(f64::NAN), Duration::ZERO);
        assert_eq!(saturating_seconds(-3.0), Duration::ZERO);
        assert_eq!(saturating_seconds(1e30), Duration::MAX);
        assert_eq!(saturating_seconds(f64::INFINITY), Duration::MAX);
        assert_eq!(saturating_seconds(0.25), Duration::from_millis(250));
    }
}
