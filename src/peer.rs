//! Peer identities.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A peer of the room, as named by the lobby.
///
/// It is the lobby's UUID, kept as a plain `u128` so that every layer above the transport (and the
/// in-memory transport) can name peers without depending on matchbox. It is new each time a
/// socket joins: the player behind it, the same across rejoins, is its
/// [`PlayerId`](crate::PlayerId). The order of `PeerId`s is the order of their UUIDs, which breaks
/// ties in [host election](crate::ConnectedPeers::host) the same way on every peer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub u128);

impl PeerId {
    /// The id as a UUID.
    pub fn as_uuid(self) -> uuid::Uuid {
        uuid::Uuid::from_u128(self.0)
    }
}

impl From<uuid::Uuid> for PeerId {
    fn from(uuid: uuid::Uuid) -> Self {
        Self(uuid.as_u128())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_uuid(), f)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short enough for logs, long enough to tell peers of one room apart.
        let text = self.as_uuid().simple().to_string();
        write!(f, "PeerId({})", &text[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_the_lobby_uuid() {
        let uuid = uuid::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        assert_eq!(PeerId::from(uuid).to_string(), uuid.to_string());
        assert_eq!(PeerId::from(uuid).as_uuid(), uuid);
    }

    #[test]
    fn orders_like_the_uuid() {
        let low = PeerId::from(uuid::Uuid::from_u128(1));
        let high = PeerId::from(uuid::Uuid::from_u128(u128::MAX));
        assert!(low < high);
    }
}
