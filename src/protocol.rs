//! What the app registered, in order, and its hash: the protocol both ends must agree on.

use bevy::prelude::Resource;

/// The registrations that make up the protocol, in the order they were made.
///
/// Messages and replicated components are identified on the wire by their registration index,
/// so two builds only understand each other if they registered the same types in the same
/// order. The hash of this list is exchanged when peers connect.
#[derive(Resource, Debug, Default, Clone)]
pub(crate) struct ProtocolRegistry {
    entries: Vec<String>,
}

impl ProtocolRegistry {
    /// Adds an entry, e.g. `message:my_game::Chat:Reliable`.
    pub(crate) fn push(&mut self, entry: impl Into<String>) {
        self.entries.push(entry.into());
    }

    /// A stable 64-bit hash (FNV-1a) of the entries and their order.
    pub(crate) fn hash(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for entry in &self.entries {
            for byte in entry.bytes().chain([0xff]) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_matters() {
        let mut a = ProtocolRegistry::default();
        a.push("x");
        a.push("y");
        let mut b = ProtocolRegistry::default();
        b.push("y");
        b.push("x");
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash(), a.clone().hash());
    }

    #[test]
    fn entry_boundaries_matter() {
        let mut a = ProtocolRegistry::default();
        a.push("ab");
        a.push("c");
        let mut b = ProtocolRegistry::default();
        b.push("a");
        b.push("bc");
        assert_ne!(a.hash(), b.hash());
    }
}
