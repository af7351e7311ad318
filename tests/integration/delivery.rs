//! Tracked messages are answered by the receiving app: the sender learns, per recipient,
//! whether each one was read, including by itself as host, and which were not because the
//! recipient left first.

use std::time::Duration;

use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy_peersync::prelude::*;
use bevy_peersync::{DeliveryOutcome, DeliveryReport, LinkConditioner, MessageTicket, SendError};
use serde::{Deserialize, Serialize};

use crate::support::sim::*;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Order(u32);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Ping;

#[derive(Resource, Default)]
struct Reports(Vec<(MessageTicket, PeerId, DeliveryOutcome)>);

fn setup(app: &mut App) {
    app.add_peer_message::<Order>(Channel::Reliable)
        .add_peer_message::<Ping>(Channel::Unreliable)
        .init_resource::<Reports>()
        .add_systems(
            Update,
            |mut reader: MessageReader<DeliveryReport>, mut reports: ResMut<Reports>| {
                reports
                    .0
                    .extend(reader.read().map(|r| (r.ticket, r.peer, r.outcome)));
            },
        );
}

fn send_tracked(app: &mut App, target: Target, order: u32) -> MessageTicket {
    app.world_mut()
        .run_system_once(move |mut writer: PeerMessageWriter<Order>| {
            writer.send_tracked(target.clone(), &Order(order)).unwrap()
        })
        .unwrap()
}

fn reports(app: &App) -> Vec<(MessageTicket, PeerId, DeliveryOutcome)> {
    app.world().resource::<Reports>().0.clone()
}

#[test]
fn a_tracked_message_is_reported_delivered_by_each_recipient_and_by_the_host_itself() {
    let mut sim = Sim::new(41, LinkConditioner::PERFECT, 3, setup);
    sim.connect_all();
    let host = sim.agreed_host().unwrap();
    let host_index = sim
        .apps
        .iter()
        .position(|app| local_id(app) == host)
        .unwrap();
    let others: Vec<PeerId> = sim
        .apps
        .iter()
        .map(local_id)
        .filter(|id| *id != host)
        .collect();
    let to_all = send_tracked(&mut sim.apps[host_index], Target::All, 1);
    let to_self = send_tracked(&mut sim.apps[host_index], Target::Host, 2);
    sim.run_until(Duration::from_secs(1), "three answers arrive", |sim| {
        reports(&sim.apps[host_index]).len() == 3
    });
    let mut got = reports(&sim.apps[host_index]);
    got.sort_by_key(|(ticket, peer, _)| (*ticket, *peer));
    let mut expected = vec![
        (to_all, others[0], DeliveryOutcome::Delivered),
        (to_all, others[1], DeliveryOutcome::Delivered),
        (to_self, host, DeliveryOutcome::Delivered),
    ];
    expected.sort_by_key(|(ticket, peer, _)| (*ticket, *peer));
    assert_eq!(
        got, expected,
        "one report per recipient, the host's own included"
    );
    assert_ne!(to_all, to_self, "each tracked message has its own ticket");
}

#[test]
fn a_recipient_that_leaves_before_reading_is_reported() {
    let mut sim = Sim::new(42, LinkConditioner::PERFECT, 2, setup);
    sim.connect_all();
    let leaver = local_id(&sim.apps[1]);
    let ticket = send_tracked(&mut sim.apps[0], Target::Peer(leaver), 3);
    sim.apps[0].update(); // sent
    // The recipient's process ends before it runs another frame.
    drop(sim.apps[1].world_mut().remove_resource::<PeerSocket>());
    for _ in 0..30 {
        sim.apps[0].update();
        sim.net.advance(DT);
    }
    assert_eq!(
        reports(&sim.apps[0]),
        vec![(ticket, leaver, DeliveryOutcome::PeerLeft)],
        "the sender learns the message may not have been read"
    );
}

#[test]
fn unreliable_messages_cannot_be_tracked() {
    let mut sim = Sim::new(43, LinkConditioner::PERFECT, 2, setup);
    sim.connect_all();
    let result = sim.apps[0]
        .world_mut()
        .run_system_once(|mut writer: PeerMessageWriter<Ping>| {
            writer.send_tracked(Target::All, &Ping)
        })
        .unwrap();
    assert_eq!(result, Err(SendError::NotReliable));
}
