//! `Entity` fields of a mapped message arrive as the receiver's entities: the copy of a
//! replicated entity, an entity whose spawn comes later (filled when it arrives), the host's own
//! entity when it messages itself, and a placeholder for what the sender does not replicate.

use std::time::Duration;

use bevy::ecs::entity::MapEntities;
use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy_peersync::LinkConditioner;
use bevy_peersync::prelude::*;
use serde::{Deserialize, Serialize};

use crate::support::sim::*;

#[derive(Serialize, Deserialize, MapEntities, Clone, Debug, PartialEq)]
struct Pickup {
    #[entities]
    coin: Entity,
    /// Not an entity: travels as is.
    points: u32,
}

#[derive(Resource, Default)]
struct Got(Vec<(PeerId, Pickup)>);

fn setup(app: &mut App) {
    replicate_basics(app);
    app.add_mapped_peer_message::<Pickup>(Channel::Reliable)
        .init_resource::<Got>()
        .add_systems(
            Update,
            |mut reader: MessageReader<FromPeer<Pickup>>, mut got: ResMut<Got>| {
                got.0
                    .extend(reader.read().map(|m| (m.peer, m.message.clone())));
            },
        );
}

fn send(app: &mut App, target: Target, pickup: Pickup) {
    app.world_mut()
        .run_system_once(move |mut writer: PeerMessageWriter<Pickup>| {
            writer.send(target.clone(), &pickup).unwrap();
        })
        .unwrap();
}

fn got(app: &App) -> Vec<(PeerId, Pickup)> {
    app.world().resource::<Got>().0.clone()
}

fn entity_with(app: &mut App, net_id: u64) -> Option<Entity> {
    let world = app.world_mut();
    let mut query = world.query::<(Entity, &NetId)>();
    query
        .iter(world)
        .find(|(_, id)| id.0 == net_id)
        .map(|(entity, _)| entity)
}

#[test]
fn an_entity_in_a_message_arrives_as_the_receivers_copy_of_it() {
    let mut sim = Sim::new(31, LinkConditioner::PERFECT, 2, setup);
    sim.connect_all();
    let coin = sim.apps[0].world_mut().spawn((Replicated, Health(1))).id();
    sim.run_until(Duration::from_secs(1), "the coin is replicated", |sim| {
        held(&mut sim.apps[1]).len() == 1
    });
    let net_id = sim.apps[0].world().get::<NetId>(coin).unwrap().0;
    let copy = entity_with(&mut sim.apps[1], net_id).unwrap();
    let other = local_id(&sim.apps[1]);
    send(
        &mut sim.apps[0],
        Target::Peer(other),
        Pickup { coin, points: 5 },
    );
    sim.run_until(Duration::from_secs(1), "the message arrives", |sim| {
        !got(&sim.apps[1]).is_empty()
    });
    assert_eq!(
        got(&sim.apps[1]),
        vec![(
            local_id(&sim.apps[0]),
            Pickup {
                coin: copy,
                points: 5
            }
        )],
        "the coin field names the receiver's copy of the coin"
    );
}

#[test]
fn an_entity_spawned_in_the_frame_its_message_is_sent_is_filled_when_its_spawn_arrives() {
    let lossy = LinkConditioner {
        latency: Duration::from_millis(30),
        jitter: Duration::from_millis(20),
        ..LinkConditioner::PERFECT
    };
    let mut sim = Sim::new(32, lossy, 2, setup);
    sim.connect_all();
    let other = local_id(&sim.apps[1]);
    // Spawned and named in one go: the message may overtake the spawn.
    let coin = sim.apps[0].world_mut().spawn((Replicated, Health(2))).id();
    send(
        &mut sim.apps[0],
        Target::Peer(other),
        Pickup { coin, points: 1 },
    );
    sim.run_until(
        Duration::from_secs(2),
        "the message arrives and the entity it names becomes the coin",
        |sim| {
            let received = got(&sim.apps[1]);
            received.len() == 1
                && sim.apps[1]
                    .world()
                    .get::<Health>(received[0].1.coin)
                    .is_some_and(|health| *health == Health(2))
        },
    );
    let net_id = sim.apps[0].world().get::<NetId>(coin).unwrap().0;
    assert_eq!(
        entity_with(&mut sim.apps[1], net_id),
        Some(got(&sim.apps[1])[0].1.coin),
        "one entity on the receiver: the message's and the replica's are the same"
    );
}

#[test]
fn the_host_messaging_itself_gets_its_own_entity_and_unreplicated_ones_are_placeholders() {
    let mut sim = Sim::new(33, LinkConditioner::PERFECT, 2, setup);
    sim.connect_all();
    let host = sim.agreed_host().unwrap();
    let (host_index, other) = if local_id(&sim.apps[0]) == host {
        (0, 1)
    } else {
        (1, 0)
    };
    let coin = sim.apps[host_index]
        .world_mut()
        .spawn((Replicated, HostOwned, Health(3)))
        .id();
    let local_only = sim.apps[host_index].world_mut().spawn_empty().id();
    send(
        &mut sim.apps[host_index],
        Target::Host,
        Pickup { coin, points: 2 },
    );
    let other_id = local_id(&sim.apps[other]);
    send(
        &mut sim.apps[host_index],
        Target::Peer(other_id),
        Pickup {
            coin: local_only,
            points: 3,
        },
    );
    sim.run_until(Duration::from_secs(1), "both messages arrive", |sim| {
        got(&sim.apps[host_index]).len() == 1 && got(&sim.apps[other]).len() == 1
    });
    assert_eq!(
        got(&sim.apps[host_index])[0].1.coin,
        coin,
        "a message to itself names its own entity"
    );
    assert_eq!(
        got(&sim.apps[other])[0].1.coin,
        Entity::PLACEHOLDER,
        "an entity the sender does not replicate arrives as a placeholder"
    );
}
