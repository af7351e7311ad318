//! A peer that sends garbage is reported and counted, never panics anyone, and everyone keeps
//! playing: the garbage's receiver, the sender itself, and the others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::harness::*;
use crate::support::hostile::Hostile;
use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy_peersync::prelude::*;
use bevy_peersync::transport::Packet;
use bevy_peersync::{InputError, MemoryNetwork};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Chat(String);

#[derive(Resource, Default)]
struct Rejections(Vec<(PeerId, InputError)>);

fn setup(app: &mut App) {
    collect::<Chat>(app, Channel::Reliable);
    app.init_resource::<Rejections>().add_observer(
        |event: On<PeerInputRejected>, mut seen: ResMut<Rejections>| {
            seen.0.push((event.peer, event.error.clone()));
        },
    );
}

fn say(app: &mut App, text: &str) {
    let text = text.to_owned();
    app.world_mut()
        .run_system_once(move |mut chat: PeerMessageWriter<Chat>| {
            chat.broadcast(&Chat(text.clone())).unwrap()
        })
        .unwrap();
}

fn heard(app: &App, text: &str) -> usize {
    inbox::<Chat>(app)
        .iter()
        .filter(|m| m.message.0 == text)
        .count()
}

#[test]
fn garbage_is_reported_and_everyone_keeps_playing() {
    let net = MemoryNetwork::new(11);
    let inject = Arc::new(Mutex::new(Vec::new()));
    let hostile = Hostile {
        inner: net.join(),
        inject: inject.clone(),
    };
    let mut apps = vec![
        app_with_socket(PeerSocket::new(net.join()), setup),
        app_with_socket(PeerSocket::new(net.join()), setup),
        app_with_socket(PeerSocket::new(hostile), setup),
    ];
    update_until(
        &mut apps,
        Duration::from_secs(5),
        "all three are connected",
        |apps| apps.iter_mut().all(|app| peers(app).len() == 2),
    );
    let victim = local_id(&apps[0]).unwrap();
    let attacker = local_id(&apps[2]).unwrap();

    let reliable = |bytes: Vec<u8>| Packet {
        peer: victim,
        channel: Channel::Reliable,
        bytes: Bytes::from(bytes),
    };
    let unreliable = |bytes: Vec<u8>| Packet {
        peer: victim,
        channel: Channel::Unreliable,
        bytes: Bytes::from(bytes),
    };
    let mut huge_piece = vec![0x02, 0x10];
    huge_piece.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]); // 2^42 bytes announced
    huge_piece.extend([0x01, 0xaa]);
    inject.lock().unwrap().extend([
        reliable(vec![0xff]),                         // no such frame
        reliable(vec![0x01, 0x80]),                   // cut short in a varint
        reliable(huge_piece),                         // a message far over the cap
        reliable(vec![0x03, 0x01, 0x00]),             // a piece of nothing (skipped with the above)
        reliable(vec![0x01, 0xe7, 0x07, 0x01, 0x00]), // a new message before the big one ended, of
        // kind 999, which nobody registered
        reliable(vec![0x01, 0x10, 0x03, 0xff, 0xff, 0xff]), // a Chat that is not a Chat
        unreliable(vec![0x07]),                             // unknown header flags
        unreliable(vec![0; 5000]),                          // over the packet limit
    ]);

    say(&mut apps[1], "still there?");
    say(&mut apps[2], "sorry about that");
    update_until(
        &mut apps,
        Duration::from_secs(5),
        "messages after the garbage arrive",
        |apps| heard(&apps[0], "still there?") == 1 && heard(&apps[0], "sorry about that") == 1,
    );

    let rejections = &apps[0].world().resource::<Rejections>().0;
    assert!(
        rejections.iter().all(|(peer, _)| *peer == attacker),
        "only the attacker is blamed"
    );
    let errors: Vec<&InputError> = rejections.iter().map(|(_, e)| e).collect();
    assert!(
        matches!(errors[0], InputError::UnknownFrame(0xff)),
        "{errors:?}"
    );
    assert!(matches!(errors[1], InputError::Malformed(_)), "{errors:?}");
    assert!(
        matches!(errors[2], InputError::MessageTooLarge { .. }),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, InputError::UnknownKind(999))),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, InputError::Decode { .. })),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, InputError::PacketTooLarge { size: 5000, .. })),
        "{errors:?}"
    );
    assert_eq!(errors.len(), 8, "each problem reported once: {errors:?}");

    let stats = {
        let world = apps[0].world_mut();
        let mut query = world.query::<(&Peer, &PeerStats)>();
        query
            .iter(world)
            .find(|(peer, _)| peer.id == attacker)
            .map(|(_, stats)| *stats)
    };
    assert_eq!(
        stats.map(|s| s.rejected),
        Some(7),
        "the attacker's stats count what was dropped"
    );
    assert_eq!(
        peers(&mut apps[0]).len(),
        2,
        "the attacker is still connected"
    );
    assert!(
        apps[1].world().resource::<Rejections>().0.is_empty(),
        "the bystander saw nothing bad"
    );
}
