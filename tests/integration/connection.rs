//! Peers find each other through the lobby and connect over real WebRTC; leaving and failing
//! are seen.

use std::time::Duration;

use crate::support::harness::*;
use bevy::prelude::*;
use bevy_peersync::prelude::*;

#[test]
fn three_apps_see_each_other_and_a_closed_one_leaves() {
    let lobby = lobby();
    let url = room_url(&lobby, "connection");
    let mut apps = connected_apps(&url, 3, |_| {});

    let ids: Vec<PeerId> = apps
        .iter()
        .map(|app| local_id(app).expect("joined apps have an id"))
        .collect();
    let host = apps[0].world().resource::<ConnectedPeers>().host();
    assert!(
        host.is_some_and(|host| ids.contains(&host)),
        "the host is one of the three"
    );
    for (i, app) in apps.iter_mut().enumerate() {
        let mut others: Vec<_> = ids.iter().copied().filter(|id| *id != ids[i]).collect();
        others.sort();
        assert_eq!(
            peers(app),
            others,
            "app {i} should see exactly the other two"
        );
        assert_eq!(
            app.world().resource::<ConnectedPeers>().host(),
            host,
            "all agree on the host"
        );
    }

    apps[2].world_mut().resource_mut::<PeerSocket>().close();
    let gone = ids[2];
    update_until(
        &mut apps,
        Duration::from_secs(10),
        "the closed app is gone from the others, and it despawned its peers",
        |apps| {
            apps[..2].iter_mut().all(|app| !peers(app).contains(&gone))
                && peers(&mut apps[2]).is_empty()
        },
    );
    assert_eq!(
        *apps[2].world().resource::<PeerSocket>().state(),
        SocketState::Closed
    );
}

#[test]
fn removing_the_socket_disconnects_with_events() {
    #[derive(Resource, Default)]
    struct Disconnects(Vec<PeerId>);

    let lobby = lobby();
    let url = room_url(&lobby, "removal");
    let mut apps = connected_apps(&url, 2, |app| {
        app.init_resource::<Disconnects>().add_observer(
            |event: On<PeerDisconnected>, mut seen: ResMut<Disconnects>| seen.0.push(event.peer),
        );
    });
    let leaving = local_id(&apps[1]).unwrap();
    apps[1].world_mut().remove_resource::<PeerSocket>();
    update_until(
        &mut apps,
        Duration::from_secs(10),
        "the survivor gets PeerDisconnected",
        |apps| apps[0].world().resource::<Disconnects>().0 == vec![leaving],
    );
    assert_eq!(
        apps[1].world().resource::<Disconnects>().0.len(),
        1,
        "the leaver saw its peer go too"
    );
}

#[test]
fn an_unreachable_lobby_fails_with_a_reason() {
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let mut config = MatchboxConfig::new("ws://127.0.0.1:1/nowhere");
    config.signaling_attempts = Some(1);
    let mut apps = vec![app_with_socket(PeerSocket::matchbox(config), |_| {})];
    update_until(
        &mut apps,
        Duration::from_secs(10),
        "the socket fails",
        |apps| {
            matches!(
                apps[0].world().resource::<PeerSocket>().state(),
                SocketState::Failed(_)
            )
        },
    );
    let SocketState::Failed(reason) = apps[0].world().resource::<PeerSocket>().state().clone()
    else {
        unreachable!()
    };
    assert!(
        reason.contains("127.0.0.1:1"),
        "the reason names the lobby: {reason}"
    );
}

#[test]
fn a_silent_lobby_fails_after_the_timeout() {
    // Accepts TCP connections (the kernel does, from the backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = MatchboxConfig::new(format!("ws://{}/room", silent.local_addr().unwrap()));
    config.connect_timeout = Duration::from_secs(2);
    let mut apps = vec![app_with_socket(PeerSocket::matchbox(config), |_| {})];
    update_until(
        &mut apps,
        Duration::from_secs(10),
        "the socket times out",
        |apps| {
            matches!(
                apps[0].world().resource::<PeerSocket>().state(),
                SocketState::Failed(_)
            )
        },
    );
    let state = apps[0].world().resource::<PeerSocket>().state().to_string();
    assert!(
        state.contains("no answer"),
        "the reason says the lobby did not answer: {state}"
    );
}
