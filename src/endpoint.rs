//! All peers' sessions and the connection handshake, without I/O.
//!
//! The endpoint turns link changes and packets into verified peers and messages, and queued
//! messages into packets. Before anything else, each side sends a hello on the reliable channel
//! with a hash of its protocol (what the app registered, in order); a peer becomes visible to
//! the game only once its hello matched ours, so two builds that disagree on the protocol never
//! exchange a single message.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::channel::Channel;
use crate::error::{InputError, SendError};
use crate::identity::{PlayerId, PlayerIdentity};
use crate::peer::PeerId;
use crate::session::{Delivery, LinkStats, PeerSession, SessionConfig};
use crate::transport::{LinkEvent, Packet};

mod hello;

use self::hello::{EarlyMessages, MAX_EARLY_BYTES, check_hello, encode_hello};

/// Kind of the handshake message.
pub(crate) const KIND_HELLO: u16 = 0;
/// Kinds below this are the library's own (handshake, replication).
pub(crate) const FIRST_APP_KIND: u16 = 16;

/// Kind of the goodbye a peer sends when it leaves on purpose (empty body).
pub(crate) const KIND_GOODBYE: u16 = 4;
/// Kind of an app message whose sender wants to hear it was read: varint app kind, varint
/// ticket, then the message (unwrapped by the net layer).
pub(crate) const KIND_TRACKED: u16 = 5;
/// Kind of the answer to tracked messages: varint count, then that many varint tickets.
pub(crate) const KIND_DELIVERED: u16 = 6;
/// Kind of a request to say the hello again (empty body; see `hello::EarlyMessages`).
pub(crate) const KIND_HELLO_AGAIN: u16 = 7;
/// How long a peer has to say hello once its link is up.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after its link came up a peer that has not said hello is asked again (and told
/// ours again, in case both were lost).
const HELLO_PATIENCE: Duration = Duration::from_secs(1);

/// What the endpoint has to tell the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointEvent {
    /// Handshake done: the peer speaks our protocol.
    Connected(PeerId),
    /// A connected peer went away.
    Disconnected { peer: PeerId, reason: Disconnect },
    /// This endpoint's owner did not run for longer than the peer timeout: every peer has
    /// dropped it by now, so it dropped them too and should rejoin the room.
    Stalled { gap: Duration },
    /// Two or more verified peers went silent at once and no link is left, verified or
    /// forming: most likely this side's own network dropped (the others dropped it too), so it
    /// should rejoin the room to find them again once the network is back, rather than play on
    /// alone in a session of its own. (A lone peer going silent could be either side's fault;
    /// the lobby probe notices when it was ours.)
    Isolated,
    /// The peer's handshake failed; nothing it sends is read.
    Refused { peer: PeerId, reason: String },
    /// Input from the peer was dropped.
    Rejected { peer: PeerId, error: InputError },
}

/// Why a verified peer is gone, as the endpoint saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disconnect {
    /// The transport reported the link down (the peer left, or the connection broke).
    LinkDown,
    /// Nothing arrived from the peer for this long.
    Silent(Duration),
    /// This side stalled for longer than the timeout, or its socket closed.
    Local,
    /// The peer said goodbye: it left on purpose.
    Goodbye,
    /// This side left the room on purpose (its socket closed).
    Closed,
    /// The same player connected again on a new link (it rejoined the room): this link is
    /// stale.
    Replaced,
}

#[derive(Debug, PartialEq, Eq)]
enum HandshakeState {
    AwaitingHello {
        since: Duration,
    },
    Verified,
    Refused,
    /// Dropped (for silence, a goodbye, or a newer link of the same player) while the transport
    /// still holds the link: what it sends is ignored (and counted) until the link goes down.
    Dropped,
}

#[derive(Debug)]
struct Link {
    session: PeerSession,
    state: HandshakeState,
    last_heard: Duration,
    /// Packets that arrived after the peer was dropped.
    ignored: u64,
    /// The player its hello proved.
    player: Option<PlayerId>,
    /// Messages that came before its hello.
    early: EarlyMessages,
}

impl Link {
    /// Verified, or still saying hello: a peer this side is (about to be) playing with.
    fn is_live_or_forming(&self) -> bool {
        matches!(
            self.state,
            HandshakeState::Verified | HandshakeState::AwaitingHello { .. }
        )
    }
}

/// A message from a verified peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) peer: PeerId,
    pub(crate) channel: Channel,
    pub(crate) kind: u16,
    pub(crate) body: Bytes,
    /// The sender asked to hear when this message was read: the ticket to answer with.
    pub(crate) ticket: Option<u64>,
}

/// Every peer's session, keyed by peer.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) config: SessionConfig,
    protocol_hash: u64,
    identity: PlayerIdentity,
    /// Our id in the room, which our hellos are bound to.
    local: Option<PeerId>,
    links: BTreeMap<PeerId, Link>,
    events: Vec<EndpointEvent>,
    scratch: Vec<(Channel, u16, Bytes)>,
    errors: Vec<InputError>,
    /// When `flush` last ran: a longer gap than the peer timeout is a stall of our own.
    last_flush: Option<Duration>,
    /// When peers were dropped for silence lately (within half the peer timeout).
    silent_drops: Vec<Duration>,
}

impl Endpoint {
    pub(crate) fn new(config: SessionConfig, protocol_hash: u64, identity: PlayerIdentity) -> Self {
        Self {
            config,
            protocol_hash,
            identity,
            local: None,
            links: BTreeMap::new(),
            events: Vec::new(),
            scratch: Vec::new(),
            errors: Vec::new(),
            last_flush: None,
            silent_drops: Vec::new(),
        }
    }

    pub(crate) fn set_protocol_hash(&mut self, hash: u64) {
        self.protocol_hash = hash;
    }

    /// Our id in the room: hellos are signed for the link between it and the peer.
    pub(crate) fn set_local(&mut self, local: Option<PeerId>) {
        self.local = local;
    }

    /// The player a verified peer proved to be.
    pub(crate) fn player_of(&self, peer: PeerId) -> Option<PlayerId> {
        self.links.get(&peer).and_then(|link| link.player)
    }

    /// Tells every verified peer we are leaving on purpose, so that it drops us at once instead
    /// of keeping our entities for a resume.
    pub(crate) fn goodbye_all(&mut self) {
        for link in self.links.values_mut() {
            if link.state == HandshakeState::Verified {
                let _ = link.session.send(
                    &self.config,
                    Channel::Reliable,
                    KIND_GOODBYE,
                    Bytes::new(),
                    None,
                );
            }
        }
    }

    pub(crate) fn handle_link(&mut self, now: Duration, event: LinkEvent) {
        match event {
            LinkEvent::Up(peer) => {
                if self.links.contains_key(&peer) {
                    return;
                }
                let mut session = PeerSession::new(now);
                session
                    .send(
                        &self.config,
                        Channel::Reliable,
                        KIND_HELLO,
                        encode_hello(
                            self.protocol_hash,
                            &self.identity,
                            self.local.unwrap_or(PeerId(0)),
                            peer,
                        ),
                        None,
                    )
                    .expect("a hello is far below every limit");
                self.links.insert(
                    peer,
                    Link {
                        session,
                        state: HandshakeState::AwaitingHello { since: now },
                        last_heard: now,
                        ignored: 0,
                        player: None,
                        early: EarlyMessages::default(),
                    },
                );
            }
            LinkEvent::Down(peer) => self.remove(peer, Disconnect::LinkDown),
        }
    }

    fn remove(&mut self, peer: PeerId, reason: Disconnect) {
        if let Some(link) = self.links.remove(&peer)
            && link.state == HandshakeState::Verified
        {
            self.events
                .push(EndpointEvent::Disconnected { peer, reason });
        }
    }

    /// Forgets every peer, as when the socket closes (`Closed`) or fails (`Local`).
    pub(crate) fn disconnect_all(&mut self, reason: Disconnect) {
        let peers: Vec<_> = self.links.keys().copied().collect();
        for peer in peers {
            self.remove(peer, reason);
        }
    }

    /// How many packets arrived from `peer` after it was dropped for silence.
    #[cfg(test)]
    pub(crate) fn ignored_after_timeout(&self, peer: PeerId) -> u64 {
        self.links.get(&peer).map_or(0, |link| link.ignored)
    }

    /// Drops verified peers that have been silent too long, or all of them when this side
    /// itself did not run for that long (they have dropped us by now, and whatever they sent
    /// meanwhile cannot restore a session they ended).
    fn check_liveness(&mut self, now: Duration) {
        let timeout = self.config.peer_timeout;
        let gap = self
            .last_flush
            .map_or(Duration::ZERO, |last| now.saturating_sub(last));
        self.last_flush = Some(now);
        let stalled = gap > timeout;
        let mut any_dropped = false;
        let mut silent_now = 0;
        for (peer, link) in &mut self.links {
            if link.state != HandshakeState::Verified {
                continue;
            }
            let silent = now.saturating_sub(link.last_heard);
            let reason = if stalled {
                Disconnect::Local
            } else if silent > timeout {
                silent_now += 1;
                Disconnect::Silent(silent)
            } else {
                continue;
            };
            link.state = HandshakeState::Dropped;
            any_dropped = true;
            self.events.push(EndpointEvent::Disconnected {
                peer: *peer,
                reason,
            });
        }
        // Peers cut off at the same instant were last heard up to a ping interval apart, so
        // they go silent over a few frames: "at once" is within half the timeout.
        let window = timeout / 2;
        self.silent_drops
            .retain(|at| now.saturating_sub(*at) <= window);
        self.silent_drops
            .extend(std::iter::repeat_n(now, silent_now));
        if stalled && any_dropped {
            self.events.push(EndpointEvent::Stalled { gap });
        } else if silent_now > 0
            && self.silent_drops.len() >= 2
            && !self.links.values().any(Link::is_live_or_forming)
        {
            // One peer going quiet says nothing about whose network failed; several at once,
            // and no one else left or on the way, most likely this side's.
            self.silent_drops.clear();
            self.events.push(EndpointEvent::Isolated);
        }
    }

    /// Reads a packet; messages from verified peers are pushed to `out`.
    pub(crate) fn handle_packet(
        &mut self,
        now: Duration,
        packet: &Packet,
        out: &mut Vec<Received>,
    ) {
        let Some(link) = self.links.get_mut(&packet.peer) else {
            return;
        };
        match link.state {
            HandshakeState::Refused => return,
            HandshakeState::Dropped => {
                if link.ignored == 0 {
                    tracing::info!(
                        "ignoring what {} sends: it was dropped and must rejoin",
                        packet.peer
                    );
                }
                link.ignored += 1;
                return;
            }
            // Unreliable packets can overtake the hello; they are not worth keeping.
            HandshakeState::AwaitingHello { .. } if packet.channel == Channel::Unreliable => return,
            _ => {}
        }
        link.last_heard = now;
        self.scratch.clear();
        self.errors.clear();
        link.session.handle_packet(
            now,
            &self.config,
            packet.channel,
            &packet.bytes,
            &mut self.scratch,
            &mut self.errors,
        );
        let peer = packet.peer;
        for error in self.errors.drain(..) {
            self.events.push(EndpointEvent::Rejected { peer, error });
        }
        let mut verified = None;
        for (channel, kind, body) in self.scratch.drain(..) {
            match (&link.state, kind) {
                (HandshakeState::AwaitingHello { .. }, KIND_HELLO) => {
                    let local = self.local.unwrap_or(PeerId(0));
                    match check_hello(&body, self.protocol_hash, peer, local) {
                        Ok(hello) => {
                            link.early.proved_by(body.clone());
                            link.state = HandshakeState::Verified;
                            link.player = Some(hello.player);
                            verified = Some((hello.player, self.events.len()));
                            self.events.push(EndpointEvent::Connected(peer));
                            for (channel, kind, body) in link.early.take() {
                                out.push(Received {
                                    peer,
                                    channel,
                                    kind,
                                    body,
                                    ticket: None,
                                });
                            }
                        }
                        Err(reason) => {
                            link.state = HandshakeState::Refused;
                            self.events.push(EndpointEvent::Refused { peer, reason });
                            return;
                        }
                    }
                }
                (
                    HandshakeState::AwaitingHello { .. } | HandshakeState::Verified,
                    KIND_HELLO_AGAIN,
                ) => {
                    if link.early.say_again() {
                        let hello = encode_hello(
                            self.protocol_hash,
                            &self.identity,
                            self.local.unwrap_or(PeerId(0)),
                            peer,
                        );
                        let _ = link.session.send(
                            &self.config,
                            Channel::Reliable,
                            KIND_HELLO,
                            hello,
                            None,
                        );
                    }
                }
                (HandshakeState::AwaitingHello { .. }, _) => {
                    match link.early.hold(channel, kind, body) {
                        Some(true) => {
                            tracing::info!("{peer} sent messages before its hello: asking again");
                            ask_hello_again(&mut link.session, &self.config);
                        }
                        Some(false) => {}
                        None => {
                            link.state = HandshakeState::Refused;
                            self.events.push(EndpointEvent::Refused {
                                peer,
                                reason: format!(
                                    "sent over {} KiB of messages before its hello",
                                    MAX_EARLY_BYTES / 1024
                                ),
                            });
                            return;
                        }
                    }
                }
                (HandshakeState::Verified, KIND_GOODBYE) => {
                    link.state = HandshakeState::Dropped;
                    self.events.push(EndpointEvent::Disconnected {
                        peer,
                        reason: Disconnect::Goodbye,
                    });
                    break;
                }
                // Said again (we asked, or it feared both were lost): the same bytes as the hello
                // verified (signatures are deterministic), so no second check is needed.
                (HandshakeState::Verified, KIND_HELLO) if link.early.is_proof(&body) => {}
                (HandshakeState::Verified, KIND_HELLO) => {
                    link.session.count_rejected();
                    self.events.push(EndpointEvent::Rejected {
                        peer,
                        error: InputError::Handshake("a second hello".to_owned()),
                    });
                }
                (HandshakeState::Verified, _) => out.push(Received {
                    peer,
                    channel,
                    kind,
                    body,
                    ticket: None,
                }),
                (HandshakeState::Refused | HandshakeState::Dropped, _) => return,
            }
        }
        if let Some((player, at)) = verified {
            self.replace_older_links(peer, player, at);
        }
    }

    /// A player proved itself on a new link: any other verified link of the same player is
    /// stale (it rejoined the room under a new id), and is dropped before the new one is
    /// reported, so the layers above can hand the old link's state to the new one.
    fn replace_older_links(&mut self, newer: PeerId, player: PlayerId, at: usize) {
        for (peer, link) in &mut self.links {
            if *peer != newer
                && link.state == HandshakeState::Verified
                && link.player == Some(player)
            {
                link.state = HandshakeState::Dropped;
                self.events.insert(
                    at,
                    EndpointEvent::Disconnected {
                        peer: *peer,
                        reason: Disconnect::Replaced,
                    },
                );
            }
        }
    }

    /// Reports input a layer above dropped (unknown kind, undecodable body), and counts it.
    pub(crate) fn reject(&mut self, peer: PeerId, error: InputError) {
        self.count_rejected(peer);
        self.events.push(EndpointEvent::Rejected { peer, error });
    }

    /// Counts input a layer above dropped and reports itself.
    pub(crate) fn count_rejected(&mut self, peer: PeerId) {
        if let Some(link) = self.links.get_mut(&peer) {
            link.session.count_rejected();
        }
    }

    /// Queues a message to a verified peer.
    pub(crate) fn send(
        &mut self,
        peer: PeerId,
        channel: Channel,
        kind: u16,
        body: Bytes,
        token: Option<u64>,
    ) -> Result<(), SendError> {
        match self.links.get_mut(&peer) {
            Some(link) if link.state == HandshakeState::Verified => {
                link.session.send(&self.config, channel, kind, body, token)
            }
            _ => Err(SendError::UnknownPeer(peer)),
        }
    }

    /// Sends what every session has queued; refuses peers that never said hello.
    pub(crate) fn flush(&mut self, now: Duration, emit: &mut impl FnMut(Packet)) {
        self.check_liveness(now);
        for (peer, link) in &mut self.links {
            if let HandshakeState::AwaitingHello { since } = link.state {
                let waited = now.saturating_sub(since);
                if waited > HELLO_TIMEOUT {
                    link.state = HandshakeState::Refused;
                    self.events.push(EndpointEvent::Refused {
                        peer: *peer,
                        reason: format!("no hello within {HELLO_TIMEOUT:?}"),
                    });
                } else if waited >= HELLO_PATIENCE && !link.early.asked {
                    // Nothing from it yet: its hello, or ours, or both may have been lost.
                    tracing::info!("{peer} has not said hello in {waited:?}: asking again");
                    link.early.asked = true;
                    ask_hello_again(&mut link.session, &self.config);
                    let hello = encode_hello(
                        self.protocol_hash,
                        &self.identity,
                        self.local.unwrap_or(PeerId(0)),
                        *peer,
                    );
                    let _ =
                        link.session
                            .send(&self.config, Channel::Reliable, KIND_HELLO, hello, None);
                }
            }
            let peer = *peer;
            let mut emit = |channel, bytes| {
                emit(Packet {
                    peer,
                    channel,
                    bytes,
                })
            };
            match link.state {
                HandshakeState::Verified => link.session.flush(now, &self.config, &mut emit),
                // Only our hello goes out until the peer is verified, and it goes out even to a
                // peer we refused, so that it learns why too.
                HandshakeState::AwaitingHello { .. } | HandshakeState::Refused => {
                    link.session.flush_reliable(&self.config, &mut emit)
                }
                // It dropped us or will soon: anything more would only be ignored.
                HandshakeState::Dropped => {}
            }
        }
    }

    pub(crate) fn drain_events(&mut self) -> std::vec::Drain<'_, EndpointEvent> {
        self.events.drain(..)
    }

    /// Deliveries of token-carrying unreliable messages, per peer.
    pub(crate) fn drain_deliveries(&mut self, mut each: impl FnMut(PeerId, u64, Delivery)) {
        for (peer, link) in &mut self.links {
            for (token, delivery) in link.session.drain_deliveries() {
                each(*peer, token, delivery);
            }
        }
    }

    /// How much input from `peer` was dropped so far (1 if it is not connected, for logging).
    pub(crate) fn rejected_count(&self, peer: PeerId) -> u64 {
        self.stats(peer).map_or(1, |stats| stats.rejected)
    }

    /// The longest smoothed round trip to a verified peer, if any is measured.
    pub(crate) fn longest_rtt(&self) -> Option<Duration> {
        self.links
            .values()
            .filter(|link| link.state == HandshakeState::Verified)
            .filter_map(|link| link.session.stats().rtt)
            .max()
    }

    pub(crate) fn stats(&self, peer: PeerId) -> Option<LinkStats> {
        self.links.get(&peer).map(|link| link.session.stats())
    }
}

#[cfg(test)]
mod tests;

/// Asks the peer of `session` to say its hello again.
fn ask_hello_again(session: &mut PeerSession, config: &SessionConfig) {
    let _ = session.send(
        config,
        Channel::Reliable,
        KIND_HELLO_AGAIN,
        Bytes::new(),
        None,
    );
}
