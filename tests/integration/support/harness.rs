//! Shared by the integration tests: a lobby, headless apps, and polling with a deadline.

use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_peersync::prelude::*;
use peersync_lobby::{LobbyConfig, LobbyThread};

/// A lobby on 127.0.0.1 with a free port.
pub fn lobby() -> LobbyThread {
    LobbyThread::spawn(LobbyConfig::local()).expect("the lobby binds a loopback port")
}

/// The URL of `room` on `lobby`.
pub fn room_url(lobby: &LobbyThread, room: &str) -> String {
    format!("ws://{}/{room}", lobby.local_addr())
}

/// A headless app joined to `url`, with `setup` applied (registrations, systems).
pub fn app(url: &str, setup: impl FnOnce(&mut App)) -> App {
    app_with_socket(PeerSocket::matchbox(MatchboxConfig::new(url)), setup)
}

/// The peer timeout of the tests' real-time apps. Several of them share one test thread, beside
/// other tests and browsers, on CI's two cores: a thread starved for the library's 2 s would
/// drop healthy peers. Tests about liveness set their own.
pub const TEST_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// A headless app over `socket`.
pub fn app_with_socket(socket: PeerSocket, setup: impl FnOnce(&mut App)) -> App {
    let mut app = App::new();
    let mut peersync = PeersyncPlugin::with_socket(socket);
    peersync.session.peer_timeout = TEST_PEER_TIMEOUT;
    app.add_plugins((MinimalPlugins, peersync));
    setup(&mut app);
    app.finish();
    app.cleanup();
    app
}

/// Updates every app until `done` holds, failing with `what` after `timeout`.
pub fn update_until(
    apps: &mut [App],
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&mut [App]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        for app in apps.iter_mut() {
            app.update();
        }
        if done(apps) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        // Give the WebRTC threads the core back between rounds; the deadline bounds the wait.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The ids of the peers an app has as `Peer` entities.
pub fn peers(app: &mut App) -> Vec<PeerId> {
    let mut query = app.world_mut().query::<&Peer>();
    let mut ids: Vec<_> = query.iter(app.world()).map(|p| p.id).collect();
    ids.sort();
    ids
}

/// An app's own id, once the lobby assigned it.
pub fn local_id(app: &App) -> Option<PeerId> {
    app.world().resource::<ConnectedPeers>().local_id()
}

/// Connects `n` apps to one room and waits until each sees all the others and all agree on
/// the host.
pub fn connected_apps(url: &str, n: usize, setup: impl Fn(&mut App)) -> Vec<App> {
    let mut apps: Vec<App> = (0..n).map(|_| app(url, &setup)).collect();
    update_until(
        &mut apps,
        Duration::from_secs(30),
        "every app sees every other as a Peer and all agree on the host",
        |apps| {
            let host = apps[0].world().resource::<ConnectedPeers>().host();
            host.is_some()
                && apps.iter_mut().all(|app| {
                    peers(app).len() == n - 1
                        && app.world().resource::<ConnectedPeers>().host() == host
                })
        },
    );
    apps
}

/// Collects the messages of type `M` an app receives.
#[derive(Resource)]
pub struct Inbox<M: Send + Sync + 'static>(pub Vec<FromPeer<M>>);

impl<M: Send + Sync + 'static> Default for Inbox<M> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Registers `M` on `channel` and records what arrives in [`Inbox<M>`].
pub fn collect<M: bevy_peersync::PeerMessage + Clone>(app: &mut App, channel: Channel) {
    app.add_peer_message::<M>(channel)
        .init_resource::<Inbox<M>>()
        .add_systems(
            Update,
            |mut reader: MessageReader<FromPeer<M>>, mut inbox: ResMut<Inbox<M>>| {
                inbox.0.extend(reader.read().cloned());
            },
        );
}

/// What an app has received of `M`.
pub fn inbox<M: Send + Sync + 'static>(app: &App) -> &[FromPeer<M>] {
    &app.world().resource::<Inbox<M>>().0
}
