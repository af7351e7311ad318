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
/// Bumped whenever the framing or the library's own messages change incompatibly.
pub(crate) const WIRE_VERSION: u16 = 1;
/// How long a peer has to say hello once its link is up.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint has to tell the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointEvent {
    /// Handshake done: the peer speaks our protocol.
    Connected(PeerId),
    /// A connected peer went away.
    Disconnected(PeerId),
    /// The peer's handshake failed; nothing it sends is read.
    Refused { peer: PeerId, reason: String },
    /// Input from the peer was dropped.
    Rejected { peer: PeerId, error: InputError },
}

#[derive(Debug, PartialEq, Eq)]
enum HandshakeState {
    AwaitingHello { since: Duration },
    Verified,
    Refused,
}

#[derive(Debug)]
struct Link {
    session: PeerSession,
    state: HandshakeState,
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
                    },
                );
            }
            LinkEvent::Down(peer) => self.remove(peer),
        }
    }

    fn remove(&mut self, peer: PeerId) {
        if let Some(link) = self.links.remove(&peer)
            && link.state == HandshakeState::Verified
        {
            self.events.push(EndpointEvent::Disconnected(peer));
        }
    }

    /// Forgets every peer, as when the socket closes.
    pub(crate) fn disconnect_all(&mut self) {
        let peers: Vec<_> = self.links.keys().copied().collect();
        for peer in peers {
            self.remove(peer);
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
            // Unreliable packets can overtake the hello; they are not worth keeping.
            HandshakeState::AwaitingHello { .. } if packet.channel == Channel::Unreliable => return,
            _ => {}
        }
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
                (HandshakeState::Refused, _) => return,
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
mod tests {
    use super::*;

    fn exchange(
        from: &mut Endpoint,
        to: &mut Endpoint,
        from_id: PeerId,
        to_id: PeerId,
    ) -> Vec<Received> {
        let mut packets = Vec::new();
        from.flush(Duration::ZERO, &mut |p| packets.push(p));
        let mut out = Vec::new();
        for mut packet in packets {
            assert_eq!(packet.peer, to_id);
            packet.peer = from_id;
            to.handle_packet(Duration::ZERO, &packet, &mut out);
        }
        out
    }

    fn pair(hash_a: u64, hash_b: u64) -> (Endpoint, Endpoint, PeerId, PeerId) {
        let (a_id, b_id) = (PeerId(1), PeerId(2));
        let mut a = Endpoint::new(SessionConfig::default(), hash_a);
        let mut b = Endpoint::new(SessionConfig::default(), hash_b);
        a.handle_link(Duration::ZERO, LinkEvent::Up(b_id));
        b.handle_link(Duration::ZERO, LinkEvent::Up(a_id));
        exchange(&mut a, &mut b, a_id, b_id);
        exchange(&mut b, &mut a, b_id, a_id);
        (a, b, a_id, b_id)
    }

    #[test]
    fn matching_hellos_connect_both_sides() {
        let (mut a, mut b, a_id, b_id) = pair(42, 42);
        assert_eq!(
            a.drain_events().collect::<Vec<_>>(),
            vec![EndpointEvent::Connected(b_id)]
        );
        assert_eq!(
            b.drain_events().collect::<Vec<_>>(),
            vec![EndpointEvent::Connected(a_id)]
        );
        a.send(
            b_id,
            Channel::Reliable,
            FIRST_APP_KIND,
            Bytes::from_static(b"hi"),
            None,
        )
        .unwrap();
        let got = exchange(&mut a, &mut b, a_id, b_id);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, Bytes::from_static(b"hi"));
        a.handle_link(Duration::ZERO, LinkEvent::Down(b_id));
        assert_eq!(
            a.drain_events().collect::<Vec<_>>(),
            vec![EndpointEvent::Disconnected(b_id)]
        );
    }

    #[test]
    fn a_protocol_mismatch_is_refused_on_both_sides() {
        let (mut a, mut b, a_id, b_id) = pair(1, 2);
        for (endpoint, other) in [(&mut a, b_id), (&mut b, a_id)] {
            let events: Vec<_> = endpoint.drain_events().collect();
            assert!(
                matches!(&events[..], [EndpointEvent::Refused { peer, reason }]
                    if *peer == other && reason.contains("protocol mismatch")),
                "expected a refusal naming the protocol, got {events:?}"
            );
            assert_eq!(
                endpoint.send(other, Channel::Reliable, FIRST_APP_KIND, Bytes::new(), None),
                Err(SendError::UnknownPeer(other))
            );
        }
    }

    #[test]
    fn garbage_instead_of_a_hello_is_refused() {
        let mut a = Endpoint::new(SessionConfig::default(), 1);
        a.handle_link(Duration::ZERO, LinkEvent::Up(PeerId(9)));
        let mut out = Vec::new();
        a.handle_packet(
            Duration::ZERO,
            &Packet {
                peer: PeerId(9),
                channel: Channel::Reliable,
                bytes: Bytes::from_static(&[0xff, 0x00, 0x13]),
            },
            &mut out,
        );
        assert!(out.is_empty());
        let events: Vec<_> = a.drain_events().collect();
        assert!(
            matches!(events[0], EndpointEvent::Rejected { .. }),
            "{events:?}"
        );
    }

    #[test]
    fn a_silent_peer_is_refused_after_the_hello_timeout() {
        let mut a = Endpoint::new(SessionConfig::default(), 1);
        a.handle_link(Duration::ZERO, LinkEvent::Up(PeerId(9)));
        a.flush(Duration::ZERO, &mut |_| {});
        a.flush(HELLO_TIMEOUT + Duration::from_secs(1), &mut |_| {});
        let events: Vec<_> = a.drain_events().collect();
        assert!(
            matches!(&events[..], [EndpointEvent::Refused { .. }]),
            "{events:?}"
        );
    }
}
