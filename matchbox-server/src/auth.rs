//! Signed join tokens: a game backend that knows the shared secret lets a player into one room
//! until a deadline, and the lobby checks it without calling anyone.
//!
//! Two formats, both with `expiry` in seconds since the Unix epoch and a lowercase hex
//! HMAC-SHA256 keyed with the secret:
//!
//! - room tokens, `<expiry>.<signature>`, signing `<room>\n<expiry>`: anyone holding one may
//!   join the room until it expires, as often and as many at once as they like;
//! - player tokens, `<expiry>.<nonce>.<signature>`, signing `<room>\n<expiry>\n<nonce>`: the
//!   backend picks a fresh nonce per player (1–64 of `A–Z a–z 0–9 - _`), and the lobby lets one
//!   live connection at a time use it. A leaked or shared player token cannot seat a second
//!   player while the first is in, and a reconnecting player (matchbox makes a new connection)
//!   gets back in as soon as its old connection is gone.
//!
//! `room` is the room name (the URL path without its leading `/`). Names with a `/` are never
//! rooms, so [`ADMIN_SCOPE`] tokens open the admin endpoints and no room. Browsers cannot set
//! headers on a WebSocket, so a join token travels in the query:
//! `wss://lobby.example.com/my-room?token=1767225600.9f86d0…`.

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::state::PeerId;

/// The scope admin tokens are minted for (`peersync-lobby --mint-token /admin`): it contains a
/// `/`, which no room name may, so an admin token opens no room and no room token is an admin's.
pub const ADMIN_SCOPE: &str = "/admin";

/// Longest nonce of a player token.
pub const MAX_NONCE: usize = 64;

/// A token that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Its deadline, Unix seconds.
    pub expiry: u64,
    /// A player token's nonce; `None` for a room token.
    pub nonce: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// No `token` in the query.
    Missing,
    /// Not `<expiry>.<hex signature>` nor `<expiry>.<nonce>.<hex signature>`.
    Malformed,
    /// The signature does not match the room and expiry: another room, or another secret.
    BadSignature,
    /// The deadline has passed.
    Expired,
    /// The deadline is further away than the lobby accepts (`--max-token-lifetime`): a token
    /// that lives for years is as good as a password that never changes.
    TooLongLived {
        /// The most seconds from now the lobby accepts.
        max_secs: u64,
    },
    /// A room token where the lobby requires player tokens (`--require-token-nonce`).
    NonceRequired,
    /// The player token is in use by a live connection.
    InUse,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Missing => "a token is required (?token=)",
            TokenError::Malformed => "malformed token",
            TokenError::BadSignature => "token signature does not match this room",
            TokenError::Expired => "token expired",
            TokenError::TooLongLived { max_secs } => {
                return write!(f, "token expires more than {max_secs} s from now");
            }
            TokenError::NonceRequired => {
                "this lobby requires player tokens (<expiry>.<nonce>.<sig>)"
            }
            TokenError::InUse => "this player token is in use by a live connection",
        })
    }
}

fn mac(secret: &[u8], room: &str, expiry: u64, nonce: Option<&str>) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(room.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    // Room names hold no newline and expiries are digits, so the two formats never sign the
    // same text.
    if let Some(nonce) = nonce {
        mac.update(b"\n");
        mac.update(nonce.as_bytes());
    }
    mac
}

fn hex(mac: Hmac<Sha256>) -> String {
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Mints a room token for `room` valid until `expiry` (Unix seconds).
pub fn mint_token(secret: &[u8], room: &str, expiry: u64) -> String {
    format!("{expiry}.{}", hex(mac(secret, room, expiry, None)))
}

/// Mints a player token: like [`mint_token`], bound to `nonce`, which one live connection at a
/// time may use. `nonce` must be 1–64 of `A–Z a–z 0–9 - _` (checked: `None` otherwise).
pub fn mint_player_token(secret: &[u8], room: &str, expiry: u64, nonce: &str) -> Option<String> {
    valid_nonce(nonce).then(|| {
        format!(
            "{expiry}.{nonce}.{}",
            hex(mac(secret, room, expiry, Some(nonce)))
        )
    })
}

pub(crate) fn valid_nonce(nonce: &str) -> bool {
    (1..=MAX_NONCE).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn hex_digit(digit: u8) -> Result<u8, TokenError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(TokenError::Malformed),
    }
}

/// Checks `token` for `room` at `now` (Unix seconds), in constant time for the signature.
/// Says nothing of lifetime limits or nonce use: those are the lobby's policy
/// ([`crate::admission`]).
pub fn verify_token(
    secret: &[u8],
    room: &str,
    token: &str,
    now: u64,
) -> Result<VerifiedToken, TokenError> {
    let (expiry, rest) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    let (nonce, hex) = match rest.split_once('.') {
        Some((nonce, hex)) if valid_nonce(nonce) => (Some(nonce), hex),
        Some(_) => return Err(TokenError::Malformed),
        None => (None, rest),
    };
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return Err(TokenError::Malformed);
    }
    let mut signature = [0u8; 32];
    for (byte, pair) in signature.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    mac(secret, room, expiry, nonce)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    if now >= expiry {
        return Err(TokenError::Expired);
    }
    Ok(VerifiedToken {
        expiry,
        nonce: nonce.map(str::to_owned),
    })
}

/// Which player tokens are in use, by which connection: a nonce seats one live connection at a
/// time, and is free again when that connection leaves.
#[derive(Debug, Default)]
pub struct TokenLeases {
    by_nonce: HashMap<(String, String), PeerId>,
    by_peer: HashMap<PeerId, (String, String)>,
}

impl TokenLeases {
    /// Whether `nonce` for `room` is held by a live connection.
    pub fn in_use(&self, room: &str, nonce: &str) -> bool {
        self.by_nonce
            .contains_key(&(room.to_owned(), nonce.to_owned()))
    }

    /// `peer` holds `nonce` for `room` until [`TokenLeases::release`].
    pub fn take(&mut self, room: String, nonce: String, peer: PeerId) {
        let key = (room, nonce);
        self.by_peer.insert(peer, key.clone());
        self.by_nonce.insert(key, peer);
    }

    /// `peer` left: its nonce, if it had one, is free.
    pub fn release(&mut self, peer: PeerId) {
        if let Some(key) = self.by_peer.remove(&peer) {
            self.by_nonce.remove(&key);
        }
    }

    /// Nonces held.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_opens_its_room_until_it_expires() {
        let token = mint_token(b"secret", "arena", 1000);
        assert_eq!(
            verify_token(b"secret", "arena", &token, 999),
            Ok(VerifiedToken {
                expiry: 1000,
                nonce: None
            })
        );
        assert_eq!(
            verify_token(b"secret", "arena", &token, 1000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_token(b"secret", "lobby", &token, 999),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_token(b"other", "arena", &token, 999),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_forged_expiry_breaks_the_signature() {
        let token = mint_token(b"secret", "arena", 1000);
        let forged = token.replacen("1000", "9999", 1);
        assert_eq!(
            verify_token(b"secret", "arena", &forged, 999),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for token in [
            "",
            "abc",
            "1.zz",
            "x.00",
            "1.é",
            &format!("1.a{}b", "é".repeat(31)),
        ] {
            assert_eq!(
                verify_token(b"s", "r", token, 0),
                Err(TokenError::Malformed),
                "{token:?}"
            );
        }
    }

    #[test]
    fn player_tokens_carry_a_signed_nonce() {
        let token = mint_player_token(b"secret", "arena", 1000, "player-7").unwrap();
        assert!(token.starts_with("1000.player-7."), "{token}");
        assert_eq!(
            verify_token(b"secret", "arena", &token, 999),
            Ok(VerifiedToken {
                expiry: 1000,
                nonce: Some("player-7".into())
            })
        );
        let swapped = token.replacen("player-7", "player-8", 1);
        assert_eq!(
            verify_token(b"secret", "arena", &swapped, 999),
            Err(TokenError::BadSignature),
            "the nonce is signed"
        );
        let room_token = mint_token(b"secret", "arena", 1000);
        let (_, signature) = room_token.split_once('.').unwrap();
        assert_eq!(
            verify_token(b"secret", "arena", &format!("1000.x.{signature}"), 999),
            Err(TokenError::BadSignature),
            "a room token's signature does not sign a nonce"
        );
        for nonce in ["", "a.b", "é", &"x".repeat(65)] {
            assert_eq!(mint_player_token(b"s", "r", 1, nonce), None, "{nonce:?}");
        }
        assert_eq!(
            verify_token(b"s", "r", &format!("1.a b.{}", "0".repeat(64)), 0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn a_nonce_seats_one_connection_at_a_time() {
        let mut leases = TokenLeases::default();
        let (a, b) = (PeerId::from_u128(1), PeerId::from_u128(2));
        leases.take("arena".into(), "n".into(), a);
        assert!(leases.in_use("arena", "n"));
        assert!(!leases.in_use("other", "n"), "nonces are per room");
        leases.release(b);
        assert!(leases.in_use("arena", "n"), "only its holder frees it");
        leases.release(a);
        assert!(!leases.in_use("arena", "n"));
        assert!(leases.is_empty());
    }

    #[test]
    fn known_answer() {
        // echo -n $'arena\n1000' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            mint_token(b"secret", "arena", 1000),
            "1000.c346708b9b0a8245d68a991c735959586590c9e7efc965b57277c4fd98029d23"
        );
    }
}
