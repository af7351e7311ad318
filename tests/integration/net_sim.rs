//! The link conditioner works over real WebRTC too: one player on a simulated 60 ms link both
//! ways shows both players a round trip of at least 120 ms, and they still play.

use std::time::Duration;

use crate::support::harness::*;
use bevy::prelude::*;
use bevy_peersync::transport::{ConditionedTransport, MatchboxTransport};
use bevy_peersync::{LinkConditioner, MatchboxConfig, PeerSocket, PeerStats};

fn rtts(app: &mut App) -> Vec<Duration> {
    let world = app.world_mut();
    let mut query = world.query::<&PeerStats>();
    query.iter(world).filter_map(|stats| stats.rtt).collect()
}

#[test]
fn a_conditioned_player_sees_and_shows_the_simulated_latency() {
    let lobby = lobby();
    let url = room_url(&lobby, "net-sim");
    let slow = LinkConditioner {
        latency: Duration::from_millis(60),
        ..LinkConditioner::PERFECT
    };
    let conditioned = ConditionedTransport::new(
        MatchboxTransport::new(MatchboxConfig::new(url.clone())),
        slow,
        11,
    );
    let mut apps = vec![
        app_with_socket(PeerSocket::new(conditioned), |_| {}),
        app(&url, |_| {}),
    ];
    update_until(
        &mut apps,
        Duration::from_secs(30),
        "both players should connect through the conditioner and measure a round trip of at \
         least 2 × 60 ms",
        |apps| {
            apps.iter_mut().all(|app| {
                let rtts = rtts(app);
                rtts.len() == 1 && rtts[0] >= Duration::from_millis(120)
            })
        },
    );
}
