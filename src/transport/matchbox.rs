//! WebRTC data channels through [`matchbox_socket`]: the only code that touches it.

use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bevy::platform::sync::Mutex;
use bytes::Bytes;
use futures::FutureExt;
use futures::channel::oneshot;
use matchbox_socket::{ChannelConfig, RtcIceServerConfig, WebRtcSocket, WebRtcSocketBuilder};

use super::{LinkEvent, Packet, SocketState, Transport, TransportIo};
use crate::channel::Channel;
use crate::peer::PeerId;
use crate::platform::{Background, LobbyProbe, spawn_background};

/// ICE servers: how peers find a path to each other across NATs.
///
/// Empty by default: on loopback and on a LAN peers reach each other directly, and public STUN
/// hosts that cannot be reached (offline, firewalled) make connections hang. Players behind
/// NATs need a STUN server, and behind symmetric NATs a TURN relay; see the operator section of
/// the README.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServers {
    /// `stun:` and `turn:` URLs, e.g. `stun:stun.example.com:3478`,
    /// `turn:turn.example.com:3478?transport=udp`.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN credential.
    pub credential: Option<String>,
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchboxConfig {
    /// The lobby room: `ws[s]://host[:port]/<room>[?next=N]`.
    pub room_url: String,
    /// ICE servers; none by default.
    pub ice_servers: IceServers,
    /// How long to wait for the lobby to admit us before the socket is
    /// [`SocketState::Failed`]. Default 10 s.
    pub connect_timeout: Duration,
    /// How many times to try reaching the lobby (3 s apart) before giving up. `None` (no
    /// limit) makes matchbox_socket 0.15 retry without pausing while the lobby is down (see
    /// `docs/upstream-matchbox.md`); [`MatchboxConfig::connect_timeout`] still ends the wait.
    /// Default 3.
    pub signaling_attempts: Option<u16>,
    /// How often to tell the lobby we are still here, so proxies keep the WebSocket open.
    /// Default 10 s.
    pub keep_alive: Option<Duration>,
    /// How many handshakes with peers that left before connecting this socket may have
    /// abandoned before it leaves the room and joins again (under a new id). matchbox_socket
    /// 0.15 never gives up such a handshake, so a member that joins and leaves in a loop would
    /// otherwise leave one half-open connection per cycle behind on every other member; the
    /// lobby's join rate limits bound how fast that can happen. Default 128.
    pub max_abandoned_handshakes: usize,
    /// How often to check that the lobby still answers and has not restarted (a `GET /health`
    /// on its port, whose boot id peersync-lobby changes per start; from a thread of its own,
    /// or in the browser a `fetch` on the page's timer, which a lobby on another origin than
    /// the page must allow: peersync-lobby does). When the lobby dies, links to the peers already
    /// connected stay up, but matchbox_socket has lost its signaling connection for good, so no
    /// new player could reach this one: once the lobby answers again after an outage, the
    /// socket rejoins the room (every peer does the same; players resume as themselves, see
    /// [`PeerResumed`](crate::PeerResumed)). The probe also asks whether the lobby still has
    /// this socket in its room (`/health?peer=<id>`): a lobby that closed the socket's
    /// connection while it lived (idle, too many messages) has forgotten it, and after two such
    /// answers in a row the socket rejoins too. `None` turns this off. Default 2 s: one small
    /// HTTP request per player every two seconds for the lobby.
    pub lobby_probe: Option<Duration>,
}

impl MatchboxConfig {
    /// A room URL with the defaults: no ICE servers, 10 s timeout, 3 attempts.
    pub fn new(room_url: impl Into<String>) -> Self {
        Self {
            room_url: room_url.into(),
            ice_servers: IceServers::default(),
            connect_timeout: Duration::from_secs(10),
            signaling_attempts: Some(3),
            keep_alive: Some(Duration::from_secs(10)),
            max_abandoned_handshakes: 128,
            lobby_probe: Some(Duration::from_secs(2)),
        }
    }
}

/// How the socket's message loop ended.
enum LoopEnd {
    /// The lobby closed the connection.
    Closed,
    /// matchbox gave up, with its reason.
    Failed(String),
    /// It panicked (matchbox 0.15 unwraps descriptions and candidates a remote peer sends it):
    /// the socket is unusable, but the room is not lost.
    Panicked(String),
}

/// First wait before rejoining after the message loop panicked; doubled per panic in a row,
/// up to 32 times this.
const REJOIN_DELAY: Duration = Duration::from_millis(250);
/// How long the socket must stay connected for the panics before to stop counting "in a row".
const PANICS_FORGIVEN_AFTER: Duration = Duration::from_secs(30);

enum Phase {
    /// Not opened yet: opens at the first `receive`.
    Idle,
    Running {
        socket: Box<WebRtcSocket>,
        ended: oneshot::Receiver<LoopEnd>,
        _task: Background,
        started_at: Duration,
    },
    Done,
}

/// A [`Transport`] over matchbox_socket: WebRTC on native (webrtc-rs) and in the browser.
pub struct MatchboxTransport {
    config: MatchboxConfig,
    // The socket's receivers are not `Sync`; only `&mut self` ever touches them.
    phase: Mutex<Phase>,
    state: SocketState,
    peers: Vec<PeerId>,
    /// Peers whose link went down: packets still queued from them are dropped.
    gone: Departed,
    /// Handshakes abandoned by peers that left before connecting (see
    /// [`MatchboxConfig::max_abandoned_handshakes`]).
    abandoned: usize,
    /// Packets from peers matchbox has not reported connected yet (it can hand over a peer's
    /// first packets before that): held, in order, until it does.
    early: Vec<(PeerId, Vec<(Channel, Bytes)>)>,
    /// Links of a socket left by [`Transport::rejoin`], reported down on the next receive.
    left_behind: Vec<PeerId>,
    /// Times the message loop died so far (for the rejoin backoff).
    panics: u32,
    /// When to rejoin after the message loop died.
    rejoin_at: Option<Duration>,
    /// Since when the socket has been connected: after a while, earlier panics are forgiven.
    connected_since: Option<Duration>,
    /// Watches the lobby (see [`MatchboxConfig::lobby_probe`]); started with the first socket.
    probe: Option<LobbyProbe>,
    /// The probe's count of lobby returns when the current socket joined.
    returns_seen: u64,
}

/// Most packets held per peer before matchbox reports it connected.
const MAX_EARLY_PACKETS: usize = 1024;
/// Most peers whose early packets are held.
const MAX_EARLY_PEERS: usize = 64;

impl MatchboxTransport {
    /// A transport that joins `config.room_url` when the app first runs.
    pub fn new(config: MatchboxConfig) -> Self {
        Self {
            config,
            phase: Mutex::new(Phase::Idle),
            state: SocketState::Connecting,
            peers: Vec::new(),
            gone: Departed::default(),
            abandoned: 0,
            early: Vec::new(),
            left_behind: Vec::new(),
            panics: 0,
            rejoin_at: None,
            connected_since: None,
            probe: None,
            returns_seen: 0,
        }
    }

    /// The lobby says it no longer has this socket in the room (it closed the socket's lobby
    /// connection: idle, rate limits, a restart the probe did not see) while its peer
    /// connections stay up, as matchbox keeps them: no new player can reach it, so it rejoins.
    fn rejoin_if_forgotten(&mut self) {
        let (Some(probe), SocketState::Connected(id)) = (&self.probe, &self.state) else {
            return;
        };
        // Mostly nothing to take: the id is only formatted when the lobby forgot someone.
        let Some(forgotten) = probe.take_forgotten() else {
            return;
        };
        if forgotten == id.as_uuid().to_string() {
            tracing::warn!(
                "the lobby no longer has this player in the room (it closed our connection to \
                 it): rejoining, so that new players can reach this one (the players already \
                 here resume as themselves)"
            );
            self.rejoin();
        }
    }

    /// The lobby came back after an outage since this socket joined: its signaling died with
    /// the old lobby, so it rejoins to be reachable by new players again.
    fn rejoin_if_lobby_returned(&mut self) {
        let Some(returns) = self.probe.as_ref().map(LobbyProbe::returns) else {
            return;
        };
        if returns <= self.returns_seen {
            return;
        }
        match self.state {
            SocketState::Connected(_) => {
                self.returns_seen = returns;
                tracing::info!(
                    "the lobby is back after an outage: rejoining the room, so that new \
                     players can reach this one (the players already here resume as themselves)"
                );
                self.rejoin();
            }
            SocketState::Failed(_) => {
                self.returns_seen = returns;
                tracing::info!("the lobby answers again: joining the room");
                self.rejoin_at = None;
                self.reopen();
            }
            _ => {}
        }
    }

    fn open(&self, now: Duration) -> Phase {
        let ice = &self.config.ice_servers;
        let (socket, message_loop) = WebRtcSocketBuilder::new(self.config.room_url.clone())
            .ice_server(RtcIceServerConfig {
                urls: ice.urls.clone(),
                username: ice.username.clone(),
                credential: ice.credential.clone(),
            })
            .reconnect_attempts(self.config.signaling_attempts)
            .signaling_keep_alive_interval(self.config.keep_alive)
            // The order is the protocol: see `Channel`.
            .add_channel(ChannelConfig::reliable())
            .add_channel(ChannelConfig::unreliable())
            .build();
        let (tx, ended) = oneshot::channel();
        let task = spawn_background("peersync-socket", async move {
            // A panic must not take the game down with the socket's thread: it is reported, and
            // the transport rejoins the room. (In the browser a panic aborts the page instead:
            // there the lobby's validation of every signal is the protection.)
            let end = match AssertUnwindSafe(message_loop).catch_unwind().await {
                Ok(Ok(())) => LoopEnd::Closed,
                Ok(Err(error)) => LoopEnd::Failed(match error {
                    matchbox_socket::Error::ConnectionFailed(ref cause)
                    | matchbox_socket::Error::Disconnected(ref cause) => {
                        format!("{error} ({cause})")
                    }
                }),
                Err(panic) => LoopEnd::Panicked(panic_text(panic.as_ref())),
            };
            let _ = tx.send(end);
        });
        Phase::Running {
            socket: Box::new(socket),
            ended,
            _task: task,
            started_at: now,
        }
    }

    /// The message loop died: fails now, and schedules a rejoin with a backoff, so a peer
    /// that keeps sending poison costs its victim a reconnect at most every few seconds.
    fn fail_and_rejoin(&mut self, now: Duration, what: String, io: &mut TransportIo) {
        let delay = REJOIN_DELAY * (1 << self.panics.min(5));
        self.panics += 1;
        self.rejoin_at = Some(now + delay);
        self.fail(format!("{what}; rejoining the room in {delay:?}"), io);
    }

    /// Starts over after a panic, once its delay has passed.
    fn rejoin_if_due(&mut self, now: Duration) {
        if self.rejoin_at.is_some_and(|at| now >= at)
            && matches!(self.state, SocketState::Failed(_))
        {
            self.rejoin_at = None;
            self.reopen();
        }
    }

    /// A failed socket starts over: a new one opens on this receive.
    fn reopen(&mut self) {
        *self.phase.get_mut().unwrap_or_else(|e| e.into_inner()) = Phase::Idle;
        self.state = SocketState::Connecting;
        if let Some(probe) = &self.probe {
            probe.ask_about(None);
        }
        self.gone.clear();
        self.early.clear();
        self.abandoned = 0;
    }

    fn fail(&mut self, reason: String, io: &mut TransportIo) {
        self.connected_since = None;
        tracing::warn!("peer socket failed: {reason}");
        self.state = SocketState::Failed(reason);
        self.end(io);
    }

    /// Drops the socket and its message loop, which closes every peer connection.
    fn end(&mut self, io: &mut TransportIo) {
        *self.phase.get_mut().unwrap_or_else(|e| e.into_inner()) = Phase::Done;
        io.links.extend(self.peers.drain(..).map(LinkEvent::Down));
    }
}

impl Transport for MatchboxTransport {
    fn receive(&mut self, now: Duration, io: &mut TransportIo) {
        self.rejoin_if_lobby_returned();
        self.rejoin_if_forgotten();
        io.links
            .extend(self.left_behind.drain(..).map(LinkEvent::Down));
        self.rejoin_if_due(now);
        let mut phase = std::mem::replace(
            self.phase.get_mut().unwrap_or_else(|e| e.into_inner()),
            Phase::Done,
        );
        if matches!(phase, Phase::Idle) {
            if self.probe.is_none()
                && let Some(every) = self.config.lobby_probe
            {
                self.probe = LobbyProbe::start(&self.config.room_url, every);
            }
            // A new socket meets the lobby as it is now.
            self.returns_seen = self.probe.as_ref().map_or(0, LobbyProbe::returns);
            phase = self.open(now);
        }
        let Phase::Running {
            socket,
            ended,
            started_at,
            ..
        } = &mut phase
        else {
            *self.phase.get_mut().unwrap_or_else(|e| e.into_inner()) = phase;
            return;
        };

        match ended.try_recv() {
            Ok(Some(LoopEnd::Panicked(message))) => {
                drop(phase);
                let what = format!("the socket's message loop panicked: {message}");
                self.fail_and_rejoin(now, what, io);
                return;
            }
            Ok(Some(end)) => {
                let reason = match end {
                    LoopEnd::Failed(error) => error,
                    _ => "the connection to the lobby ended".to_owned(),
                };
                let url = self.config.room_url.clone();
                let was_connected = matches!(self.state, SocketState::Connected(_));
                drop(phase);
                if was_connected {
                    // Signaling died after we joined (and matchbox ended the socket once its
                    // last peer went): join again, with a backoff while the lobby is away.
                    self.fail_and_rejoin(now, format!("{url}: {reason}"), io);
                } else {
                    self.fail(format!("{url}: {reason}"), io);
                }
                return;
            }
            Ok(None) => {}
            Err(oneshot::Canceled) => {
                drop(phase);
                let what = "the socket's message loop stopped".to_owned();
                self.fail_and_rejoin(now, what, io);
                return;
            }
        }

        if let Some(id) = socket.id()
            && self.state == SocketState::Connecting
        {
            self.state = SocketState::Connected(PeerId::from(id.0));
            self.connected_since = Some(now);
            if let Some(probe) = &self.probe {
                probe.ask_about(Some(id.0.to_string()));
            }
        }
        if self
            .connected_since
            .is_some_and(|since| now.saturating_sub(since) > PANICS_FORGIVEN_AFTER)
        {
            self.panics = 0;
        }
        if self.state == SocketState::Connecting
            && now.saturating_sub(*started_at) > self.config.connect_timeout
        {
            let reason = format!(
                "no answer from the lobby at {} within {:?}",
                self.config.room_url, self.config.connect_timeout
            );
            drop(phase);
            self.fail(reason, io);
            return;
        }

        // `Err` means the loop is gone; `ended` reports why on a later frame.
        if let Ok(changes) = socket.try_update_peers() {
            for (id, state) in changes {
                let peer = PeerId::from(id.0);
                match state {
                    matchbox_socket::PeerState::Connected => {
                        self.gone.remove(peer);
                        if !self.peers.contains(&peer) {
                            self.peers.push(peer);
                            io.links.push(LinkEvent::Up(peer));
                            if let Some(index) = self.early.iter().position(|(p, _)| *p == peer) {
                                let (_, packets) = self.early.swap_remove(index);
                                io.incoming
                                    .extend(packets.into_iter().map(|(channel, bytes)| Packet {
                                        peer,
                                        channel,
                                        bytes,
                                    }));
                            }
                        }
                    }
                    matchbox_socket::PeerState::Disconnected => {
                        if let Some(index) = self.peers.iter().position(|p| *p == peer) {
                            self.peers.swap_remove(index);
                            io.links.push(LinkEvent::Down(peer));
                        } else if !self.gone.contains(peer) {
                            // It left before its connection opened: matchbox keeps the
                            // handshake (and its peer connection) for as long as this socket.
                            self.abandoned += 1;
                        }
                        self.gone.insert(peer);
                        self.early.retain(|(p, _)| *p != peer);
                    }
                }
            }
        }
        if self.abandoned >= self.config.max_abandoned_handshakes
            && matches!(self.state, SocketState::Connected(_))
        {
            tracing::warn!(
                "{} handshakes abandoned by peers that left before connecting: leaving the room \
                 and joining again to drop them",
                self.abandoned
            );
            drop(phase);
            self.rejoin();
            return;
        }
        for channel in Channel::ALL {
            if let Ok(data) = socket.get_channel_mut(channel.index()) {
                for (id, bytes) in data.receive() {
                    let peer = PeerId::from(id.0);
                    if bytes.is_empty() || self.gone.contains(peer) {
                        continue;
                    }
                    if self.peers.contains(&peer) {
                        io.incoming.push(Packet {
                            peer,
                            channel,
                            bytes,
                        });
                        continue;
                    }
                    // Not reported connected yet: hold it (bounded) until it is. Sending to it
                    // before then would be dropped by matchbox.
                    let held = self.early.len();
                    match self.early.iter_mut().find(|(p, _)| *p == peer) {
                        Some((_, packets)) if packets.len() < MAX_EARLY_PACKETS => {
                            packets.push((channel, bytes));
                        }
                        Some(_) => tracing::warn!("dropping early packets from {peer}"),
                        None if held < MAX_EARLY_PEERS => {
                            self.early.push((peer, vec![(channel, bytes)]));
                        }
                        None => tracing::warn!("dropping packets from unannounced peer {peer}"),
                    }
                }
            }
        }
        *self.phase.get_mut().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    fn send(&mut self, io: &mut TransportIo) {
        let phase = self.phase.get_mut().unwrap_or_else(|e| e.into_inner());
        let Phase::Running { socket, .. } = phase else {
            io.outgoing.clear();
            return;
        };
        for packet in io.outgoing.drain(..) {
            debug_assert!(
                !packet.bytes.is_empty(),
                "empty packets can be dropped on the way"
            );
            if let Ok(data) = socket.get_channel_mut(packet.channel.index()) {
                // An error means the message loop is gone: `receive` reports it.
                let _ = data.try_send(packet.bytes, matchbox_socket::PeerId(packet.peer.as_uuid()));
            }
        }
    }

    fn state(&self) -> SocketState {
        self.state.clone()
    }

    fn close(&mut self) {
        self.rejoin_at = None;
        let mut io = TransportIo::default();
        self.end(&mut io);
        if !matches!(self.state, SocketState::Failed(_)) {
            self.state = SocketState::Closed;
        }
    }

    /// Drops the socket (the lobby tells the room we left, so the others forget our old id
    /// and its half-open connections) and opens a new one on the next receive.
    fn rejoin(&mut self) -> bool {
        if !matches!(self.state, SocketState::Connected(_)) {
            return false;
        }
        *self.phase.get_mut().unwrap_or_else(|e| e.into_inner()) = Phase::Idle;
        self.state = SocketState::Connecting;
        self.connected_since = None;
        if let Some(probe) = &self.probe {
            probe.ask_about(None);
        }
        self.left_behind.append(&mut self.peers);
        self.gone.clear();
        self.early.clear();
        self.abandoned = 0;
        true
    }

    fn relayed(&self, peer: PeerId) -> Option<bool> {
        let phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        match &*phase {
            Phase::Running { socket, .. } => {
                socket.is_relayed(matchbox_socket::PeerId(peer.as_uuid()))
            }
            _ => None,
        }
    }
}

/// The message of a panic payload, for people to read.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Peers that left, remembered (up to a bound, oldest forgotten first) so that packets still
/// queued from them are dropped.
#[derive(Default)]
struct Departed {
    set: HashSet<PeerId>,
    order: VecDeque<PeerId>,
}

impl Departed {
    const LIMIT: usize = 1024;

    fn contains(&self, peer: PeerId) -> bool {
        self.set.contains(&peer)
    }

    fn insert(&mut self, peer: PeerId) {
        if self.set.insert(peer) {
            self.order.push_back(peer);
            if self.order.len() > Self::LIMIT
                && let Some(oldest) = self.order.pop_front()
            {
                self.set.remove(&oldest);
            }
        }
    }

    fn remove(&mut self, peer: PeerId) {
        if self.set.remove(&peer) {
            self.order.retain(|p| *p != peer);
        }
    }

    fn clear(&mut self) {
        self.set.clear();
        self.order.clear();
    }
}
