//! Signed join tokens: a game backend that knows the shared secret lets a player into one room
//! until a deadline, and the lobby checks it without calling anyone.
//!
//! A token is `<expiry>.<signature>`: `expiry` in seconds since the Unix epoch, `signature` the
//! lowercase hex HMAC-SHA256, keyed with the secret, of `<room>\n<expiry>`, where `room` is the
//! room name (the URL path without its leading `/`). Browsers cannot set headers on a WebSocket,
//! so it travels in the query: `wss://lobby.example.com/my-room?token=1767225600.9f86d0…`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// No `token` in the query.
    Missing,
    /// Not `<expiry>.<hex signature>`.
    Malformed,
    /// The signature does not match the room and expiry: another room, or another secret.
    BadSignature,
    /// The deadline has passed.
    Expired,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Missing => "a token is required (?token=)",
            TokenError::Malformed => "malformed token",
            TokenError::BadSignature => "token signature does not match this room",
            TokenError::Expired => "token expired",
        })
    }
}

fn mac(secret: &[u8], room: &str, expiry: u64) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(room.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    mac
}

/// Mints a token for `room` valid until `expiry` (Unix seconds).
pub fn mint_token(secret: &[u8], room: &str, expiry: u64) -> String {
    let signature = mac(secret, room, expiry).finalize().into_bytes();
    let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    format!("{expiry}.{hex}")
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
pub fn verify_token(secret: &[u8], room: &str, token: &str, now: u64) -> Result<(), TokenError> {
    let (expiry, hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return Err(TokenError::Malformed);
    }
    let mut signature = [0u8; 32];
    for (byte, pair) in signature.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    mac(secret, room, expiry)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    if now >= expiry {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_opens_its_room_until_it_expires() {
        let token = mint_token(b"secret", "arena", 1000);
        assert_eq!(verify_token(b"secret", "arena", &token, 999), Ok(()));
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
    fn known_answer() {
        // echo -n $'arena\n1000' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            mint_token(b"secret", "arena", 1000),
            "1000.c346708b9b0a8245d68a991c735959586590c9e7efc965b57277c4fd98029d23"
        );
    }
}
