//! The network figures reach the game: each peer's clock offset and jitter on its `PeerStats`,
//! and the worst figures in Bevy's diagnostics store.

use std::time::Duration;

use bevy::diagnostic::DiagnosticsStore;
use bevy::prelude::*;
use bevy::time::Real;
use bevy_peersync::prelude::*;
use bevy_peersync::{LinkConditioner, PeersyncDiagnostics};

use crate::support::sim::Sim;

fn stats_of(app: &mut App) -> PeerStats {
    let world = app.world_mut();
    let mut query = world.query::<&PeerStats>();
    *query.single(world).expect("one peer")
}

#[test]
fn peers_see_each_others_clock_offset_and_publish_diagnostics() {
    let link = LinkConditioner {
        latency: Duration::from_millis(30),
        ..LinkConditioner::PERFECT
    };
    let mut sim = Sim::new(5, link, 1, |_| {});
    // The second app starts a second later: its clock reads a second less.
    sim.run_for(Duration::from_secs(1));
    sim.join();
    sim.connect_all();
    sim.run_for(Duration::from_secs(3));
    let elapsed = |app: &App| app.world().resource::<Time<Real>>().elapsed_secs_f64();
    let behind = elapsed(&sim.apps[1]) - elapsed(&sim.apps[0]);
    for (who, expected) in [(0, behind), (1, -behind)] {
        let stats = stats_of(&mut sim.apps[who]);
        let offset = stats.clock_offset.expect("clock samples arrived");
        assert!(
            (offset - expected).abs() < 1e-3,
            "app {who} should see the other's clock {expected:.4} s off its own (the second \
             app started later), got {offset:.4} s"
        );
        assert!(
            stats.jitter.is_some(),
            "app {who} should show the jitter once timestamped packets arrived"
        );
        let store = sim.apps[who].world().resource::<DiagnosticsStore>();
        for path in [
            PeersyncDiagnostics::RTT_MS,
            PeersyncDiagnostics::JITTER_MS,
            PeersyncDiagnostics::PACKET_LOSS,
        ] {
            assert!(
                store.get_measurement(&path).is_some(),
                "app {who} should publish {path} to the diagnostics store"
            );
        }
        let rtt_ms = store
            .get_measurement(&PeersyncDiagnostics::RTT_MS)
            .map(|m| m.value);
        assert_eq!(
            rtt_ms,
            stats.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
            "app {who}: with one peer the worst round trip is that peer's"
        );
    }
}
