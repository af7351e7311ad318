//! TURN credentials in the shared-secret scheme of coturn's `use-auth-secret` (the "TURN REST
//! API" draft, draft-uberti-behave-turn-rest): the lobby and coturn share a secret, the lobby
//! hands each player a pair that works until a deadline, and coturn checks it without calling
//! anyone.
//!
//! ```text
//! username   = <expiry, Unix seconds> ":" <user>
//! credential = base64(HMAC-SHA1(key = secret, message = username))
//! ```
//!
//! `user` means nothing to coturn's check; it shows in coturn's log and counts against its
//! per-user quota. Served as `GET /turn` ([`crate::admission::admit_turn`] decides who may ask).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha1::Sha1;

/// Default lifetime of a credential, seconds: a day, the draft's recommendation. A player keeps
/// the credential it started with for as long as it stays in its room (its ICE servers are fixed
/// when its socket opens), and every player who joins later makes it allocate a new relay with
/// it, so the credential must outlive the longest session that should still take newcomers.
pub const DEFAULT_TTL_SECS: u64 = 86_400;

/// Shortest lifetime a lobby hands out, seconds: below it, a player's clock or a slow first
/// connection would make fresh credentials useless.
pub const MIN_TTL_SECS: u64 = 60;

/// Longest lifetime a lobby hands out, seconds (a week): a leaked credential opens the relay to
/// anyone until it expires.
pub const MAX_TTL_SECS: u64 = 7 * 86_400;

/// What `GET /turn` answers: ICE servers a WebRTC client can use as they are (a browser's
/// `RTCIceServer` is `{urls, username, credential}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TurnCredential {
    /// `<expiry>:<user>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub credential: String,
    /// Seconds from now until it stops working.
    pub ttl: u64,
    /// The servers it works for (`turn:`, `turns:`, and any `stun:` the lobby was told).
    pub uris: Vec<String>,
}

/// The password coturn expects for `username` under `secret`.
pub fn turn_password(secret: &[u8], username: &str) -> String {
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// A credential for `user`, valid from `now` (Unix seconds) for `ttl_secs`, clamped to
/// [`MIN_TTL_SECS`]..=[`MAX_TTL_SECS`].
pub fn mint_turn_credential(
    secret: &[u8],
    user: &str,
    now: u64,
    ttl_secs: u64,
    uris: &[String],
) -> TurnCredential {
    let ttl = ttl_secs.clamp(MIN_TTL_SECS, MAX_TTL_SECS);
    let username = format!("{}:{user}", now.saturating_add(ttl));
    TurnCredential {
        credential: turn_password(secret, &username),
        username,
        ttl,
        uris: uris.to_vec(),
    }
}

/// Whether `user` may be the user part of a username: what a player token's nonce may be (1 to
/// [`MAX_NONCE`](crate::auth::MAX_NONCE) of `A–Z a–z 0–9 - _`), since a player token's nonce
/// becomes its user. No `:` (coturn's separator) and nothing a log would mangle.
pub fn valid_user(user: &str) -> bool {
    crate::auth::valid_nonce(user)
}

/// Checks an ICE server URI handed out with the credentials (`--turn-uri`): `stun:`, `stuns:`,
/// `turn:` or `turns:`, then a host, and no spaces or control characters. Clients fail on a
/// mistyped one only when they first connect a peer, so the lobby refuses it at start.
pub fn parse_ice_uri(uri: &str) -> Result<String, String> {
    let (scheme, rest) = uri
        .split_once(':')
        .ok_or_else(|| format!("{uri:?} is not <scheme>:<host>[:<port>][?transport=…]"))?;
    if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
        return Err(format!(
            "{uri:?}: the scheme must be stun, stuns, turn or turns"
        ));
    }
    if rest.is_empty() || rest.starts_with([':', '?']) {
        return Err(format!("{uri:?} names no host"));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{uri:?} contains spaces or control characters"));
    }
    Ok(uri.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
        //   b"not-a-secret", b"1767225600:player42", hashlib.sha1).digest()).decode())'
        // (and `printf %s 1767225600:player42 | openssl dgst -binary -sha1 -hmac not-a-secret
        //   | base64` agrees)
        assert_eq!(
            turn_password(b"not-a-secret", "1767225600:player42"),
            "YFYZWA8LpLf8kANvTNbBDOzlMaE="
        );
        // RFC 2202, HMAC-SHA1 test case 2 (effcdf6a…259a7c79), in base64.
        assert_eq!(
            turn_password(b"Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn a_credential_names_its_deadline_and_signs_its_username() {
        let uris = vec!["turn:203.0.113.10:3478?transport=udp".to_owned()];
        let credential =
            mint_turn_credential(b"not-a-secret", "player42", 1_767_139_200, 86_400, &uris);
        assert_eq!(
            credential,
            TurnCredential {
                username: "1767225600:player42".into(),
                credential: "YFYZWA8LpLf8kANvTNbBDOzlMaE=".into(),
                ttl: 86_400,
                uris,
            }
        );
    }

    #[test]
    fn lifetimes_are_clamped() {
        let ttl = |secs| mint_turn_credential(b"s", "u", 1000, secs, &[]).ttl;
        assert_eq!(ttl(0), MIN_TTL_SECS, "a zero lifetime would be useless");
        assert_eq!(ttl(u64::MAX), MAX_TTL_SECS);
        assert_eq!(
            mint_turn_credential(b"s", "u", u64::MAX, 3600, &[]).username,
            format!("{}:u", u64::MAX),
            "a clock at the end of time saturates instead of overflowing"
        );
    }

    #[test]
    fn users() {
        assert!(valid_user("player-42_b"));
        for user in ["", "a:b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_user(user), "{user:?} should be refused");
        }
    }

    #[test]
    fn ice_uris() {
        for uri in [
            "turn:203.0.113.10:3478?transport=udp",
            "turns:turn.example.com:5349",
            "stun:turn.example.com",
        ] {
            assert_eq!(parse_ice_uri(uri).as_deref(), Ok(uri));
        }
        for uri in [
            "",
            "turn",
            "turn:",
            "turn::3478",
            "http://turn.example.com",
            "turn:a b",
        ] {
            assert!(parse_ice_uri(uri).is_err(), "{uri:?} should be refused");
        }
    }
}
