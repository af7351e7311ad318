//! The network figures in Bevy's diagnostics store, and the clock the endpoint is given.
//!
//! Diagnostic paths are fixed when the app is built, while peers come and go, so the store
//! holds the worst figure over the connected peers; each peer's own are on its [`PeerStats`].

use std::time::Duration;

use bevy::diagnostic::{Diagnostic, DiagnosticPath, Diagnostics, RegisterDiagnostic};
use bevy::ecs::system::SystemParam;
use bevy::platform::time::Instant;
use bevy::prelude::*;
use bevy::time::{Real, TimeUpdateStrategy};

use super::peers::PeerStats;

/// The paths under which the plugin publishes network figures to Bevy's
/// [`DiagnosticsStore`](bevy::diagnostic::DiagnosticsStore), once a frame while a peer is
/// connected: the worst over the connected peers, since a path cannot be added per peer once
/// the app runs and the worst link is the one a player feels. Show them with
/// `LogDiagnosticsPlugin` or read them from the store; per-peer figures are on [`PeerStats`].
pub struct PeersyncDiagnostics;

impl PeersyncDiagnostics {
    /// Highest round-trip time over the peers, in milliseconds ([`PeerStats::rtt`]).
    pub const RTT_MS: DiagnosticPath = DiagnosticPath::const_new("peersync/rtt_ms");
    /// Highest arrival jitter over the peers, in milliseconds ([`PeerStats::jitter`]).
    pub const JITTER_MS: DiagnosticPath = DiagnosticPath::const_new("peersync/jitter_ms");
    /// Highest packet loss over the peers, in percent ([`PeerStats::packet_loss`] × 100).
    pub const PACKET_LOSS: DiagnosticPath = DiagnosticPath::const_new("peersync/packet_loss");
}

pub(super) fn register(app: &mut App) {
    app.register_diagnostic(Diagnostic::new(PeersyncDiagnostics::RTT_MS).with_suffix(" ms"))
        .register_diagnostic(Diagnostic::new(PeersyncDiagnostics::JITTER_MS).with_suffix(" ms"))
        .register_diagnostic(Diagnostic::new(PeersyncDiagnostics::PACKET_LOSS).with_suffix("%"));
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Records the worst of the peers' figures; nothing while no peer has one.
pub(super) fn publish_diagnostics(stats: Query<&PeerStats>, mut diagnostics: Diagnostics) {
    let worst =
        |figure: fn(&PeerStats) -> Option<f64>| stats.iter().filter_map(figure).reduce(f64::max);
    if let Some(rtt) = worst(|stats| stats.rtt.map(millis)) {
        diagnostics.add_measurement(&PeersyncDiagnostics::RTT_MS, || rtt);
    }
    if let Some(jitter) = worst(|stats| stats.jitter.map(millis)) {
        diagnostics.add_measurement(&PeersyncDiagnostics::JITTER_MS, || jitter);
    }
    if let Some(loss) = worst(|stats| Some(f64::from(stats.packet_loss) * 100.0)) {
        diagnostics.add_measurement(&PeersyncDiagnostics::PACKET_LOSS, || loss);
    }
}

/// The time the endpoint is given, on the app's `Time<Real>` clock.
///
/// `Time<Real>` stands still during a frame: packets read at its start and the acks sent at its
/// end would get the same time, so the ack delay would always read zero and the peer would
/// count our frame time as network time. With the automatic time strategy this adds how long
/// the frame has run so far. Under a manual strategy (tests, benchmarks, replays) the frame
/// time is already virtual and is used as it is, which keeps those runs deterministic.
#[derive(SystemParam)]
pub(super) struct NetNow<'w> {
    time: Res<'w, Time<Real>>,
    strategy: Option<Res<'w, TimeUpdateStrategy>>,
    clock: ResMut<'w, NetClock>,
}

/// The last time handed out: the endpoint's time never goes backwards, even when a frame's
/// clock starts behind where the last frame's end was read (the render world's instant, which
/// the automatic strategy uses, can lag).
#[derive(Resource, Debug, Default)]
pub(super) struct NetClock {
    last: Duration,
}

impl NetNow<'_> {
    pub(super) fn now(&mut self) -> Duration {
        let mut now = self.time.elapsed();
        if matches!(
            self.strategy.as_deref(),
            None | Some(TimeUpdateStrategy::Automatic)
        ) && let Some(frame_start) = self.time.last_update()
        {
            now += Instant::now().saturating_duration_since(frame_start);
        }
        self.clock.last = self.clock.last.max(now);
        self.clock.last
    }
}
