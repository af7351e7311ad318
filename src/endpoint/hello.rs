//! The hello: the first message on every link. It carries the wire version and protocol hash
//! (two builds that disagree never exchange a message) and the sender's player identity with a
//! signature that binds it to this link, so no member can pose as another player.

use bytes::Bytes;

use crate::identity::{self, PlayerId, PlayerIdentity};
use crate::peer::PeerId;
use crate::wire::Reader;

const HELLO_MAGIC: &[u8; 4] = b"PSYN";
/// What the signature covers besides the fields, so it cannot be taken for any other signature.
const SIGNING_CONTEXT: &[u8] = b"bevy_peersync hello";
/// Bumped whenever the framing or the library's own messages change incompatibly. 2: acks
/// carry their delay, and unreliable packets may carry the sender's clock. 3: the hello carries
/// the player identity. 4: mutation messages carry their owner's clock (for interpolation).
/// 5: tracked messages and their answers (library kinds 5 and 6). 6: a peer may ask for the
/// hello again (library kind 7).
pub(crate) const WIRE_VERSION: u16 = 7;

/// Most bytes of messages held from a peer whose hello has not come yet.
pub(crate) const MAX_EARLY_BYTES: usize = 256 * 1024;
/// What each held message counts for beyond its body, so that empty messages are bounded too.
const HELD_MESSAGE_COST: usize = 32;
/// Most times a link says its hello again when asked.
const MAX_HELLOS_AGAIN: u8 = 3;

/// What a link does about a hello that did not come first.
///
/// The hello is the first message on the reliable channel, so it should arrive first. But a
/// WebRTC stack can lose a new channel's first message (webrtc-rs lost it on its TURN path
/// until 0.21, browsers when a listener is attached late; seen here once through a NAT, cause
/// unknown), and a link whose hello is lost would stay unverified, or be refused, for good.
/// So the messages that come before it are held (bounded) and the peer is asked, once, to say
/// it again; once it comes they are read, in the order they came.
#[derive(Debug, Default)]
pub(crate) struct EarlyMessages {
    held: Vec<(crate::channel::Channel, u16, Bytes)>,
    bytes: usize,
    /// We asked the peer to say its hello again (once per link).
    pub(crate) asked: bool,
    /// Times we said ours again when asked.
    said_again: u8,
    /// The peer's hello, once verified: the same bytes again are a repeat, not a second hello.
    proof: Option<Bytes>,
}

impl EarlyMessages {
    /// Holds a message that came before the hello; false when the bound is reached (the peer
    /// is refused then). The first one held means the peer should be asked again: returns
    /// whether to ask now.
    pub(crate) fn hold(
        &mut self,
        channel: crate::channel::Channel,
        kind: u16,
        body: Bytes,
    ) -> Option<bool> {
        let cost = body.len() + HELD_MESSAGE_COST;
        if self.bytes + cost > MAX_EARLY_BYTES {
            return None;
        }
        self.bytes += cost;
        self.held.push((channel, kind, body));
        let ask = !self.asked;
        self.asked = true;
        Some(ask)
    }

    /// The peer's hello was verified.
    pub(crate) fn proved_by(&mut self, hello: Bytes) {
        self.proof = Some(hello);
    }

    /// Whether `hello` repeats the one verified.
    pub(crate) fn is_proof(&self, hello: &[u8]) -> bool {
        self.proof.as_deref() == Some(hello)
    }

    /// The messages held, once the hello came.
    pub(crate) fn take(&mut self) -> Vec<(crate::channel::Channel, u16, Bytes)> {
        self.bytes = 0;
        std::mem::take(&mut self.held)
    }

    /// Whether to say our hello again on the peer's request (a few times per link at most, so
    /// requests cannot make this side send without end).
    pub(crate) fn say_again(&mut self) -> bool {
        let allowed = self.said_again < MAX_HELLOS_AGAIN;
        self.said_again = self.said_again.saturating_add(1);
        allowed
    }
}

/// What a hello says, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) player: PlayerId,
}

/// The bytes signed: context, version, protocol, the link (sender, then receiver), the player.
fn signed_part(protocol_hash: u64, from: PeerId, to: PeerId, player: PlayerId) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + 2 + 8 + 32 + 32);
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    message.extend_from_slice(&protocol_hash.to_le_bytes());
    message.extend_from_slice(&from.0.to_le_bytes());
    message.extend_from_slice(&to.0.to_le_bytes());
    message.extend_from_slice(&player.0);
    message
}

/// Our hello to `to`, sent as `from`.
pub(crate) fn encode_hello(
    protocol_hash: u64,
    identity: &PlayerIdentity,
    from: PeerId,
    to: PeerId,
) -> Bytes {
    let player = identity.player();
    let signature = identity.sign(&signed_part(protocol_hash, from, to, player));
    let mut body = Vec::with_capacity(4 + 2 + 8 + 32 + 64);
    body.extend_from_slice(HELLO_MAGIC);
    body.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    body.extend_from_slice(&protocol_hash.to_le_bytes());
    body.extend_from_slice(&player.0);
    body.extend_from_slice(&signature);
    Bytes::from(body)
}

/// Checks the hello `from` sent us (`to`) against our protocol; the error is the reason to
/// refuse the peer.
pub(crate) fn check_hello(
    body: &[u8],
    protocol_hash: u64,
    from: PeerId,
    to: PeerId,
) -> Result<Hello, String> {
    let short = |_| "hello too short".to_owned();
    let mut reader = Reader::new(body);
    let magic = reader.array::<4>().map_err(short)?;
    if &magic != HELLO_MAGIC {
        return Err("not a bevy_peersync peer".to_owned());
    }
    let version = reader.u16().map_err(short)?;
    if version != WIRE_VERSION {
        return Err(format!(
            "wire version mismatch: the peer speaks version {version}, we speak {WIRE_VERSION}"
        ));
    }
    let theirs = reader.u64().map_err(short)?;
    if theirs != protocol_hash {
        return Err(format!(
            "protocol mismatch: the peer's build registered other messages or components \
             (protocol {theirs:016x}, ours {protocol_hash:016x})"
        ));
    }
    let player = PlayerId(reader.array::<32>().map_err(short)?);
    let signature = reader.array::<64>().map_err(short)?;
    if !reader.is_empty() {
        return Err("hello too long".to_owned());
    }
    if !identity::verify(
        player,
        &signed_part(protocol_hash, from, to, player),
        &signature,
    ) {
        return Err(format!(
            "its hello does not prove player {player}: a forged identity, or a hello meant \
             for another link"
        ));
    }
    Ok(Hello { player })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_proves_its_player_on_its_own_link_only() {
        let alice = PlayerIdentity::from_secret([3; 32]);
        let (a, b, c) = (PeerId(1), PeerId(2), PeerId(3));
        let hello = encode_hello(9, &alice, a, b);
        assert_eq!(
            check_hello(&hello, 9, a, b),
            Ok(Hello {
                player: alice.player()
            })
        );
        assert!(
            check_hello(&hello, 9, c, b).is_err(),
            "replayed by another sender, it must fail"
        );
        assert!(
            check_hello(&hello, 9, a, c).is_err(),
            "replayed to another receiver, it must fail"
        );
        let mut forged = hello.to_vec();
        forged[20] ^= 1; // inside the player key
        assert!(
            check_hello(&forged, 9, a, b).is_err(),
            "a claimed key must sign"
        );
        assert!(check_hello(&hello[..50], 9, a, b).is_err());
        assert!(
            check_hello(&hello, 10, a, b)
                .unwrap_err()
                .contains("protocol mismatch")
        );
    }
}
