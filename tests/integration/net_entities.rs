//! A message names an entity every peer knows by its `NetId`; the receiver turns it into its own
//! entity with `NetEntities` (the sender's `Entity` would mean another entity there).

use std::time::Duration;

use crate::support::sim::*;
use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::NetEntities;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Pickup {
    coin: NetId,
}

/// What the receiver made of the pickups it got: the health of the entity each one named.
#[derive(Resource, Default)]
struct Resolved(Vec<Option<u32>>);

fn setup(app: &mut App) {
    replicate_basics(app);
    app.add_peer_message::<Pickup>(Channel::Reliable)
        .init_resource::<Resolved>()
        .add_systems(Update, resolve);
}

fn resolve(
    mut pickups: MessageReader<FromPeer<Pickup>>,
    entities: NetEntities,
    health: Query<&Health>,
    mut resolved: ResMut<Resolved>,
) {
    for pickup in pickups.read() {
        let entity = entities.entity(pickup.message.coin);
        resolved
            .0
            .push(entity.and_then(|e| health.get(e).ok()).map(|h| h.0));
    }
}

#[test]
fn a_net_id_in_a_message_finds_the_receivers_copy_of_the_entity() {
    let mut sim = Sim::new(71, LinkConditioner::PERFECT, 2, setup);
    sim.connect_all();
    // Entities the receiver does not know, so that its own entity numbers differ from the
    // sender's.
    for n in 0..5 {
        sim.apps[1].world_mut().spawn(Health(100 + n));
    }
    let coin = sim.apps[0].world_mut().spawn((Replicated, Health(3))).id();
    sim.run_until(
        Duration::from_secs(1),
        "the receiver should hold the coin",
        |sim| held(&mut sim.apps[1]).len() == 1,
    );
    let net_id = sim.apps[0]
        .world_mut()
        .run_system_once(move |entities: NetEntities| entities.net_id(coin))
        .unwrap()
        .expect("a sent entity has a net id");
    let receiver = local_id(&sim.apps[1]);
    sim.apps[0]
        .world_mut()
        .run_system_once(move |mut pickups: PeerMessageWriter<Pickup>| {
            pickups.send(receiver, &Pickup { coin: net_id }).unwrap();
        })
        .unwrap();
    sim.run_until(
        Duration::from_secs(1),
        "the receiver should get the pickup",
        |sim| !sim.apps[1].world().resource::<Resolved>().0.is_empty(),
    );
    assert_eq!(
        sim.apps[1].world().resource::<Resolved>().0,
        vec![Some(3)],
        "the pickup should name the receiver's copy of the coin"
    );
}
