//! A WebRTC stack can lose a new channel's first message, which on ours is the hello (seen once
//! through a NAT in CI). Two players whose first reliable packets to each other both vanish must
//! still meet, and see what each had before they met.

use std::time::Duration;

use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;

use crate::support::sim::*;

#[test]
fn players_whose_hellos_were_lost_ask_again_and_meet() {
    let mut sim = Sim::new(31, LinkConditioner::PERFECT, 2, replicate_basics);
    let ids = sim.net.peers();
    for from in &ids {
        for to in &ids {
            if from != to {
                sim.net.lose_next_reliable(*from, *to);
            }
        }
    }
    for (i, app) in sim.apps.iter_mut().enumerate() {
        app.world_mut().spawn((Replicated, Health(10 + i as u32)));
    }
    let took = sim.run_until(
        Duration::from_secs(5),
        "both players meet although both hellos were lost, and each holds both entities",
        |sim| {
            sim.apps.iter_mut().all(|app| {
                let world = app.world_mut();
                let mut healths: Vec<u32> =
                    world.query::<&Health>().iter(world).map(|h| h.0).collect();
                healths.sort_unstable();
                healths == [10, 11] && app.world().resource::<ConnectedPeers>().len() == 1
            })
        },
    );
    println!("met {took:?} after their links came up");
    for (i, app) in sim.apps.iter().enumerate() {
        let peer = app
            .world()
            .resource::<ConnectedPeers>()
            .ids()
            .next()
            .unwrap();
        let stats = app
            .world()
            .resource::<ConnectedPeers>()
            .entity(peer)
            .and_then(|entity| app.world().get::<PeerStats>(entity))
            .expect("a connected peer has stats");
        assert_eq!(
            stats.rejected, 0,
            "peer {i} counted nothing as bad input: a lost hello is not the peer's fault"
        );
    }
}
