//! Typed messages between three apps over real WebRTC: reliable ones arrive complete and in
//! order (big ones too), unreliable ones arrive, and what cannot be sent is refused at once.

use std::time::Duration;

use crate::support::harness::*;
use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy_peersync::prelude::*;
use bevy_peersync::{SendError, SessionConfig};
use serde::{Deserialize, Serialize};

/// Small numbered messages with a big one among them, all of one type so their order can be
/// checked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Ordered {
    Seq(u32),
    Blob(Vec<u8>),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Position {
    sender_index: u8,
    x: f32,
}

fn blob() -> Vec<u8> {
    (0..200 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn setup(app: &mut App) {
    collect::<Ordered>(app, Channel::Reliable);
    collect::<Position>(app, Channel::Unreliable);
}

#[test]
fn reliable_messages_arrive_complete_and_in_order_and_unreliable_ones_arrive() {
    let lobby = lobby();
    let url = room_url(&lobby, "messages");
    let mut apps = connected_apps(&url, 3, setup);

    for (index, app) in apps.iter_mut().enumerate() {
        app.world_mut()
            .run_system_once(
                move |mut ordered: PeerMessageWriter<Ordered>,
                      mut positions: PeerMessageWriter<Position>| {
                    for seq in 0..100 {
                        ordered.broadcast(&Ordered::Seq(seq)).unwrap();
                        if seq == 50 {
                            ordered.broadcast(&Ordered::Blob(blob())).unwrap();
                        }
                    }
                    for x in 0..20 {
                        positions
                            .broadcast(&Position {
                                sender_index: index as u8,
                                x: x as f32,
                            })
                            .unwrap();
                    }
                },
            )
            .unwrap();
    }

    update_until(
        &mut apps,
        Duration::from_secs(20),
        "every app has 2 × 101 ordered messages",
        |apps| {
            apps.iter()
                .all(|app| inbox::<Ordered>(app).len() == 2 * 101)
        },
    );

    let mut expected: Vec<Ordered> = (0..100).map(Ordered::Seq).collect();
    expected.insert(51, Ordered::Blob(blob()));
    let ids: Vec<PeerId> = apps.iter().map(|app| local_id(app).unwrap()).collect();
    for (receiver, app) in apps.iter().enumerate() {
        for (sender, id) in ids.iter().enumerate() {
            if sender == receiver {
                continue;
            }
            let from_sender: Vec<Ordered> = inbox::<Ordered>(app)
                .iter()
                .filter(|m| m.peer == *id)
                .map(|m| m.message.clone())
                .collect();
            assert!(
                from_sender == expected,
                "app {receiver} should get app {sender}'s 101 messages complete and in order"
            );
        }
    }

    // Unreliable messages may be lost in general; on loopback with nothing else going on,
    // they arrive.
    update_until(
        &mut apps,
        Duration::from_secs(5),
        "unreliable messages arrive",
        |apps| {
            apps.iter()
                .all(|app| inbox::<Position>(app).len() >= 2 * 15)
        },
    );
    for (receiver, app) in apps.iter().enumerate() {
        assert!(
            inbox::<Position>(app)
                .iter()
                .all(|m| usize::from(m.message.sender_index) != receiver),
            "nobody receives its own broadcast"
        );
    }
}

#[test]
fn what_cannot_be_sent_is_refused_at_send_time() {
    // No socket needed: limits are checked before anything is queued.
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, PeersyncPlugin::default()));
    setup(&mut app);
    let max_unreliable = SessionConfig::default().max_unreliable_message();
    let max_reliable = SessionConfig::default().max_message_size;
    app.world_mut()
        .run_system_once(
            move |mut ordered: PeerMessageWriter<Ordered>,
                  mut positions: PeerMessageWriter<Position>| {
                assert!(max_unreliable < 1200);
                assert_eq!(
                    positions.broadcast(&Position {
                        sender_index: 0,
                        x: 0.0
                    }),
                    Ok(()),
                    "small unreliable messages are fine"
                );
                assert_eq!(
                    ordered.broadcast(&Ordered::Blob(vec![0; max_unreliable])),
                    Ok(()),
                    "the reliable channel takes what the unreliable one cannot"
                );
                let result = ordered.broadcast(&Ordered::Blob(vec![0; max_reliable]));
                assert!(
                    matches!(
                        result,
                        Err(SendError::TooLarge {
                            channel: Channel::Reliable,
                            ..
                        })
                    ),
                    "over the reliable cap is refused: {result:?}"
                );
                let unknown = PeerId(42);
                assert_eq!(
                    ordered.send(unknown, &Ordered::Seq(1)),
                    Err(SendError::UnknownPeer(unknown)),
                    "a peer that is not connected is an error"
                );
            },
        )
        .unwrap();
}

#[test]
fn an_unreliable_message_over_one_packet_is_refused() {
    #[derive(Serialize, Deserialize, Clone, Debug)]
    struct Bulky(Vec<u8>);

    let mut app = App::new();
    app.add_plugins((MinimalPlugins, PeersyncPlugin::default()));
    app.add_peer_message::<Bulky>(Channel::Unreliable);
    let max = SessionConfig::default().max_unreliable_message();
    app.world_mut()
        .run_system_once(move |mut bulky: PeerMessageWriter<Bulky>| {
            // bincode writes a length from 251 to 65535 in 3 bytes: this encodes to `max`.
            assert_eq!(bulky.broadcast(&Bulky(vec![0; max - 3])), Ok(()));
            let result = bulky.broadcast(&Bulky(vec![0; 1200]));
            assert!(
                matches!(result, Err(SendError::TooLarge { channel: Channel::Unreliable, max: m, .. }) if m == max),
                "1200 bytes do not fit one unreliable packet: {result:?}"
            );
        })
        .unwrap();
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Hello(u8);

#[test]
fn a_message_sent_as_a_peer_connects_arrives() {
    for round in 0..3 {
        let lobby = lobby();
        let url = room_url(&lobby, &format!("hello-{round}"));
        let mut apps: Vec<App> = (0..3)
            .map(|_| {
                app(&url, |app| {
                    collect::<Hello>(app, Channel::Reliable);
                    app.add_observer(
                        |joined: On<PeerConnected>, mut hello: PeerMessageWriter<Hello>| {
                            hello.send(joined.peer, &Hello(1)).unwrap();
                        },
                    );
                })
            })
            .collect();
        update_until(
            &mut apps,
            Duration::from_secs(20),
            "every app hears both others' hello",
            |apps| apps.iter().all(|app| inbox::<Hello>(app).len() == 2),
        );
    }
}
