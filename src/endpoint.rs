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
use crate::peer::PeerId;
use crate::session::{Delivery, LinkStats, PeerSession, SessionConfig};
use crate::transport::{LinkEvent, Packet};
use crate::wire::Reader;

/// Kind of the handshake message.
pub(crate) const KIND_HELLO: u16 = 0;
/// Kinds below this are the library's own (handshake, replication).
pub(crate) const FIRST_APP_KIND: u16 = 16;

const HELLO_MAGIC: &[u8; 4] = b"PSYN";
/// Bumped whenever the framing or the library's own messages change incompatibly. 2: acks
/// carry their delay, and unreliable packets may carry the sender's clock.
pub(crate) const WIRE_VERSION: u16 = 2;
/// How long a peer has to say hello once its link is up.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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
}

#[derive(Debug, PartialEq, Eq)]
enum HandshakeState {
    AwaitingHello {
        since: Duration,
    },
    Verified,
    Refused,
    /// Dropped for silence while the transport still holds the link: what it sends is
    /// ignored (and counted) until the link goes down.
    TimedOut,
}

#[derive(Debug)]
struct Link {
    session: PeerSession,
    state: HandshakeState,
    last_heard: Duration,
    /// Packets that arrived after the peer was dropped for silence.
    ignored: u64,
}

/// A message from a verified peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) peer: PeerId,
    pub(crate) channel: Channel,
    pub(crate) kind: u16,
    pub(crate) body: Bytes,
}

/// Every peer's session, keyed by peer.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) config: SessionConfig,
    protocol_hash: u64,
    links: BTreeMap<PeerId, Link>,
    events: Vec<EndpointEvent>,
    scratch: Vec<(Channel, u16, Bytes)>,
    errors: Vec<InputError>,
    /// When `flush` last ran: a longer gap than the peer timeout is a stall of our own.
    last_flush: Option<Duration>,
}

pub(crate) fn encode_hello(protocol_hash: u64) -> Bytes {
    let mut body = Vec::with_capacity(14);
    body.extend_from_slice(HELLO_MAGIC);
    body.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    body.extend_from_slice(&protocol_hash.to_le_bytes());
    Bytes::from(body)
}

/// Checks a peer's hello against ours; the error is the reason to refuse it.
pub(crate) fn check_hello(body: &[u8], protocol_hash: u64) -> Result<(), String> {
    let mut reader = Reader::new(body);
    let magic = reader
        .array::<4>()
        .map_err(|_| "hello too short".to_owned())?;
    if &magic != HELLO_MAGIC {
        return Err("not a bevy_peersync peer".to_owned());
    }
    let version = reader.u16().map_err(|_| "hello too short".to_owned())?;
    if version != WIRE_VERSION {
        return Err(format!(
            "wire version mismatch: the peer speaks version {version}, we speak {WIRE_VERSION}"
        ));
    }
    let theirs = reader.u64().map_err(|_| "hello too short".to_owned())?;
    if theirs != protocol_hash {
        return Err(format!(
            "protocol mismatch: the peer's build registered other messages or components \
             (protocol {theirs:016x}, ours {protocol_hash:016x})"
        ));
    }
    Ok(())
}

impl Endpoint {
    pub(crate) fn new(config: SessionConfig, protocol_hash: u64) -> Self {
        Self {
            config,
            protocol_hash,
            links: BTreeMap::new(),
            events: Vec::new(),
            scratch: Vec::new(),
            errors: Vec::new(),
            last_flush: None,
        }
    }

    pub(crate) fn set_protocol_hash(&mut self, hash: u64) {
        self.protocol_hash = hash;
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
                        encode_hello(self.protocol_hash),
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

    /// Forgets every peer, as when the socket closes.
    pub(crate) fn disconnect_all(&mut self) {
        let peers: Vec<_> = self.links.keys().copied().collect();
        for peer in peers {
            self.remove(peer, Disconnect::Local);
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
        for (peer, link) in &mut self.links {
            if link.state != HandshakeState::Verified {
                continue;
            }
            let silent = now.saturating_sub(link.last_heard);
            let reason = if stalled {
                Disconnect::Local
            } else if silent > timeout {
                Disconnect::Silent(silent)
            } else {
                continue;
            };
            link.state = HandshakeState::TimedOut;
            any_dropped = true;
            self.events.push(EndpointEvent::Disconnected {
                peer: *peer,
                reason,
            });
        }
        if stalled && any_dropped {
            self.events.push(EndpointEvent::Stalled { gap });
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
            HandshakeState::TimedOut => {
                if link.ignored == 0 {
                    tracing::info!(
                        "ignoring what {} sends: it was dropped for silence and must rejoin",
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
        for (channel, kind, body) in self.scratch.drain(..) {
            match (&link.state, kind) {
                (HandshakeState::AwaitingHello { .. }, KIND_HELLO) => {
                    match check_hello(&body, self.protocol_hash) {
                        Ok(()) => {
                            link.state = HandshakeState::Verified;
                            self.events.push(EndpointEvent::Connected(peer));
                        }
                        Err(reason) => {
                            link.state = HandshakeState::Refused;
                            self.events.push(EndpointEvent::Refused { peer, reason });
                            return;
                        }
                    }
                }
                (HandshakeState::AwaitingHello { .. }, _) => {
                    link.state = HandshakeState::Refused;
                    self.events.push(EndpointEvent::Refused {
                        peer,
                        reason: "sent messages before its hello".to_owned(),
                    });
                    return;
                }
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
                }),
                (HandshakeState::Refused | HandshakeState::TimedOut, _) => return,
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
            if let HandshakeState::AwaitingHello { since } = link.state
                && now.saturating_sub(since) > HELLO_TIMEOUT
            {
                link.state = HandshakeState::Refused;
                self.events.push(EndpointEvent::Refused {
                    peer: *peer,
                    reason: format!("no hello within {HELLO_TIMEOUT:?}"),
                });
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
                HandshakeState::TimedOut => {}
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

    pub(crate) fn stats(&self, peer: PeerId) -> Option<LinkStats> {
        self.links.get(&peer).map(|link| link.session.stats())
    }
}

#[cfg(test)]
mod tests;
