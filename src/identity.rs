//! Player identities: who a peer is, above the lobby's id for its current connection.
//!
//! The lobby gives a socket a new [`PeerId`](crate::PeerId) every time it joins, so a player
//! whose socket fails and rejoins would come back as a stranger. A [`PlayerId`] stays: it is the
//! public half of an Ed25519 key pair, and each hello carries a signature that binds it to that
//! link (the sender's and receiver's peer ids), so no other member can claim a player's
//! identity, nor replay a hello it saw on another link.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A player's stable identity: its public key. The same across rejoins for as long as the game
/// keeps the [`PlayerIdentity`] (one per run by default).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlayerId(pub [u8; 32]);

impl fmt::Debug for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlayerId({self})")
    }
}

impl fmt::Display for PlayerId {
    /// The first 8 bytes in hex: enough to tell players of a room apart in logs and overlays.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The secret that makes this peer a player: keep it (or derive it from the game's own login)
/// to come back as the same player in another run. Random per run by default; set it with
/// [`PeersyncPlugin::identity`](crate::PeersyncPlugin::identity).
#[derive(Clone)]
pub struct PlayerIdentity {
    key: SigningKey,
}

impl fmt::Debug for PlayerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        write!(f, "PlayerIdentity({})", self.player())
    }
}

impl PlayerIdentity {
    /// A fresh identity from the operating system's random source (the browser's `crypto` on
    /// wasm).
    pub fn random() -> Self {
        let mut secret = [0; 32];
        if let Err(error) = getrandom::fill(&mut secret) {
            // Without an entropy source nothing is secret anyway; say so loudly and go on.
            tracing::error!("no random source for the player identity: {error}");
        }
        Self::from_secret(secret)
    }

    /// The identity of a 32-byte secret: the same secret is the same player. Derive it from
    /// something only this player has (a stored random value, a login token's hash): anyone who
    /// knows it can play as this player.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The player this identity proves.
    pub fn player(&self) -> PlayerId {
        PlayerId(self.key.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl Default for PlayerIdentity {
    fn default() -> Self {
        Self::random()
    }
}

/// Whether `signature` is `player`'s over `message`. A key that is not a valid curve point, or a
/// weak one, never verifies.
pub(crate) fn verify(player: PlayerId, message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&player.0) else {
        return false;
    };
    if key.is_weak() {
        return false;
    }
    key.verify(message, &Signature::from_bytes(signature))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_proves_the_player_and_only_for_its_message() {
        let alice = PlayerIdentity::from_secret([1; 32]);
        let mallory = PlayerIdentity::from_secret([2; 32]);
        let signature = alice.sign(b"hello on link 1");
        assert!(verify(alice.player(), b"hello on link 1", &signature));
        assert!(
            !verify(alice.player(), b"hello on link 2", &signature),
            "a hello replayed on another link must not verify"
        );
        assert!(
            !verify(
                alice.player(),
                b"hello on link 1",
                &mallory.sign(b"hello on link 1")
            ),
            "another key cannot sign for alice"
        );
        assert!(
            !verify(PlayerId([0; 32]), b"x", &[0; 64]),
            "garbage keys fail"
        );
    }

    #[test]
    fn the_same_secret_is_the_same_player() {
        assert_eq!(
            PlayerIdentity::from_secret([7; 32]).player(),
            PlayerIdentity::from_secret([7; 32]).player()
        );
        assert_ne!(
            PlayerIdentity::random().player(),
            PlayerIdentity::random().player()
        );
    }
}
