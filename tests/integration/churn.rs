//! A member that joins and leaves in a loop makes every other member start a WebRTC handshake
//! that matchbox_socket never gives up. The plugin bounds what that costs: once a socket has
//! `max_abandoned_handshakes` of them it leaves the room and joins again, dropping them all, and
//! the players are connected to each other again moments later.

use std::time::{Duration, Instant};

use crate::support::harness::*;
use crate::support::raw_member::RawMember;
use bevy::prelude::*;
use bevy_peersync::{MatchboxConfig, PeerSocket};

const LIMIT: usize = 4;

/// Joins the room with a plain WebSocket, waits for the members' offers (their handshakes have
/// started), and leaves.
fn join_and_leave(url: &str, members: usize) {
    let mut member =
        RawMember::join(url, Duration::from_millis(200)).expect("the lobby accepts a WebSocket");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut offers = 0;
    while offers < members {
        assert!(
            Instant::now() < deadline,
            "each of the {members} members should offer a connection to the newcomer"
        );
        if member
            .next_offer("the lobby should keep the churner's socket open")
            .is_some()
        {
            offers += 1;
        }
    }
    member.leave();
}

#[test]
fn a_member_joining_and_leaving_in_a_loop_costs_a_rejoin_not_unbounded_connections() {
    let lobby = lobby();
    let url = room_url(&lobby, "churn");
    let mut apps: Vec<App> = (0..2)
        .map(|_| {
            let config = MatchboxConfig {
                max_abandoned_handshakes: LIMIT,
                ..MatchboxConfig::new(url.clone())
            };
            app_with_socket(PeerSocket::matchbox(config), |_| {})
        })
        .collect();
    update_until(
        &mut apps,
        Duration::from_secs(30),
        "the two players see each other",
        |apps| apps.iter_mut().all(|app| peers(app).len() == 1),
    );
    let before: Vec<_> = apps.iter().map(|app| local_id(app).unwrap()).collect();

    // The churner's offers come from the sockets' own threads; the apps run in between.
    for _ in 0..LIMIT {
        join_and_leave(&url, 2);
        for app in &mut apps {
            app.update();
        }
    }
    update_until(
        &mut apps,
        Duration::from_secs(30),
        "both players should have left and rejoined under new ids, and see each other again",
        |apps| {
            apps.iter_mut().enumerate().all(|(i, app)| {
                local_id(app).is_some_and(|id| id != before[i]) && peers(app).len() == 1
            })
        },
    );
}
