//! The networking part of the demo, written to be read: this is all it takes to make the game
//! multiplayer.

use bevy::prelude::*;
use bevy_peersync::prelude::*;
use bevy_peersync::transport::{ConditionedTransport, MatchboxTransport};
use bevy_peersync::{IceServers, LinkConditioner};
use serde::{Deserialize, Serialize};

use crate::game::{Ball, Player, Velocity};

/// A reliable message: said once to every peer that joins.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Greeting {
    pub text: String,
}

/// What this peer heard lately (for the overlay), and how much in all (for the bots' log).
#[derive(Resource, Default)]
pub struct Heard {
    pub recent: Vec<String>,
    pub total: usize,
}

/// The demo's network flags.
#[derive(Debug, Clone, Default)]
pub struct NetOptions {
    /// `--net-sim`: a simulated bad network between this player and the others.
    pub net_sim: Option<LinkConditioner>,
    /// `--stun`, `--turn`, `--turn-user`, `--turn-pass`.
    pub ice: IceServers,
    /// `--peer-timeout`: the library's default unless given.
    pub peer_timeout: Option<std::time::Duration>,
    /// `--max-abandoned-handshakes`: the library's default unless given.
    pub max_abandoned_handshakes: Option<usize>,
}

pub fn plugin(app: &mut App, room_url: String, options: &NetOptions) {
    // 1. Join the room. Every peer of the room connects to every other directly (WebRTC); the
    //    lobby only introduces them. Players behind NATs need the ICE servers (`--stun`,
    //    `--turn`) to find a path. (`--net-sim` puts a simulated bad network in between.)
    let mut config = MatchboxConfig::new(room_url);
    config.ice_servers = options.ice.clone();
    if let Some(limit) = options.max_abandoned_handshakes {
        config.max_abandoned_handshakes = limit;
    }
    let socket = match options.net_sim {
        None => PeerSocket::matchbox(config),
        Some(conditioner) => PeerSocket::new(ConditionedTransport::new(
            MatchboxTransport::new(config),
            conditioner,
            1,
        )),
    };
    let mut peersync = PeersyncPlugin::with_socket(socket);
    if let Some(timeout) = options.peer_timeout {
        peersync.session.peer_timeout = timeout;
    }
    app.add_plugins(peersync);

    // 2. Say what travels. Every peer must register the same things in the same order (peers
    //    with a different list refuse each other with a clear reason).
    app.replicate_codec::<Transform>(TransformCodec::default()) // 13 bytes per moving square
        .replicate::<Player>()
        .replicate::<Ball>()
        .replicate::<Velocity>() // so the next host carries the ball on
        .add_peer_message::<Greeting>(Channel::Reliable);
    // Others' squares and the ball glide instead of stuttering with the network's jitter: shown
    // a little in the past, between the values their owners sent (this peer's own never wait).
    app.interpolate::<Transform>();

    // 3. Say hello to whoever joins, and note what others say.
    app.init_resource::<Heard>()
        .add_observer(greet)
        .add_systems(Update, listen);
}

fn greet(joined: On<PeerConnected>, mut greetings: PeerMessageWriter<Greeting>) {
    let text = "hello!".to_owned();
    // Fails only if the peer left in the meantime.
    let _ = greetings.send(joined.peer, &Greeting { text });
}

fn listen(mut greetings: MessageReader<FromPeer<Greeting>>, mut heard: ResMut<Heard>) {
    for greeting in greetings.read() {
        let line = format!("{} says {}", short(greeting.peer), greeting.message.text);
        info!("{line}");
        heard.recent.push(line);
        heard.total += 1;
        if heard.recent.len() > 5 {
            heard.recent.remove(0);
        }
    }
}

/// The first characters of an id: enough to tell the players of a room apart.
pub fn short(peer: PeerId) -> String {
    peer.to_string()[..8].to_owned()
}

// 4. That is all: the game spawns `(Replicated, Player, Transform)` for its own square and moves
//    it (see game.rs); peers see it move. The ball is `HostOwned`: only the host simulates it,
//    and when the host leaves the next one takes over.
