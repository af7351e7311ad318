//! A map keyed by one owner's wire numbers, for the receiver's per-value lookups.
//!
//! An owner numbers its entities 1, 2, 3, … as it announces them, so the numbers a receiver
//! holds are mostly small and close together: they index a vector, one load per value instead
//! of a hash lookup (see "Where the receiver's time goes" in BENCHMARKS.md). The numbers come
//! from the network, though, and a peer may send any: the vector only grows to cover numbers
//! below [`DENSE_MIN`] plus [`DENSE_PER_ENTRY`] slots per entry held, so its length is bounded
//! by what the map holds (which its users bound); any other number goes to a hash map.

use bevy::platform::collections::HashMap;

/// Numbers below this may always be held in the vector.
const DENSE_MIN: usize = 1024;

/// Slots of the vector allowed per entry held: gaps left by entities that went away, or
/// numbers handed out for entities that never reached this peer.
const DENSE_PER_ENTRY: usize = 4;

/// Values by wire number: a vector for the numbers an owner hands out in order, a hash map for
/// the others.
#[derive(Debug)]
pub(crate) struct WireMap<T> {
    /// Indexed by the number itself (slot 0 is never used by an honest owner).
    dense: Vec<Option<T>>,
    /// Numbers the vector did not cover when they were inserted. A number is in one of the two
    /// at most.
    sparse: HashMap<u32, T>,
    /// How many numbers are held.
    len: usize,
}

impl<T> Default for WireMap<T> {
    fn default() -> Self {
        Self {
            dense: Vec::new(),
            sparse: HashMap::default(),
            len: 0,
        }
    }
}

impl<T> WireMap<T> {
    pub(crate) fn get(&self, wire: u32) -> Option<&T> {
        match self.dense.get(wire as usize) {
            Some(Some(value)) => Some(value),
            _ if self.sparse.is_empty() => None,
            _ => self.sparse.get(&wire),
        }
    }

    pub(crate) fn get_mut(&mut self, wire: u32) -> Option<&mut T> {
        match self.dense.get_mut(wire as usize) {
            Some(Some(value)) => Some(value),
            _ if self.sparse.is_empty() => None,
            _ => self.sparse.get_mut(&wire),
        }
    }

    pub(crate) fn contains(&self, wire: u32) -> bool {
        self.get(wire).is_some()
    }

    /// Holds `value` as `wire`'s; returns what was there.
    pub(crate) fn insert(&mut self, wire: u32, value: T) -> Option<T> {
        let index = wire as usize;
        if index >= self.dense.len() && index < self.dense_limit() {
            // Doubling keeps growth amortized; the limit keeps it bounded.
            let len = (index + 1)
                .max(self.dense.len() * 2)
                .min(self.dense_limit());
            self.dense.resize_with(len, || None);
        }
        let previous = match self.dense.get_mut(index) {
            Some(slot) => {
                let previous = slot.replace(value);
                match previous {
                    Some(previous) => Some(previous),
                    None if self.sparse.is_empty() => None,
                    None => self.sparse.remove(&wire),
                }
            }
            None => self.sparse.insert(wire, value),
        };
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    pub(crate) fn remove(&mut self, wire: u32) -> Option<T> {
        let removed = match self.dense.get_mut(wire as usize).and_then(Option::take) {
            Some(value) => {
                // Numbers at the end that went away give their slots back.
                while self.dense.last().is_some_and(Option::is_none) {
                    self.dense.pop();
                }
                Some(value)
            }
            None if self.sparse.is_empty() => None,
            None => self.sparse.remove(&wire),
        }?;
        self.len -= 1;
        Some(removed)
    }

    /// Every value held, in no particular order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.dense
            .iter_mut()
            .filter_map(Option::as_mut)
            .chain(self.sparse.values_mut())
    }

    /// Every number held with its value, in no particular order, leaving the map empty.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (u32, T)> + '_ {
        self.len = 0;
        let dense = std::mem::take(&mut self.dense);
        dense
            .into_iter()
            .enumerate()
            .filter_map(|(index, slot)| Some((index as u32, slot?)))
            .chain(self.sparse.drain())
    }

    /// How long the vector may grow.
    fn dense_limit(&self) -> usize {
        DENSE_MIN.saturating_add(self.len.saturating_mul(DENSE_PER_ENTRY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_handed_out_in_order_are_held_in_the_vector() {
        let mut map = WireMap::default();
        for wire in 1..=10_000 {
            assert_eq!(map.insert(wire, wire * 2), None);
        }
        assert!(map.sparse.is_empty(), "an honest owner's numbers are dense");
        assert!(map.dense.len() <= 10_001 * 2, "grown by doubling");
        assert_eq!(map.len, 10_000);
        assert_eq!(map.get(7), Some(&14));
        assert_eq!(map.get(0), None);
        assert_eq!(map.get(10_001), None);
        *map.get_mut(7).unwrap() = 1;
        assert_eq!(map.remove(7), Some(1));
        assert_eq!(map.remove(7), None, "removed once");
        assert_eq!(map.get(7), None);
        assert_eq!(map.len, 9_999);
    }

    #[test]
    fn huge_and_scattered_numbers_cost_what_is_held() {
        let mut map = WireMap::default();
        for wire in [u32::MAX, u32::MAX - 1, 3_000_000_000, 1 << 20] {
            map.insert(wire, wire);
        }
        assert!(map.dense.is_empty(), "no slot for far numbers");
        assert_eq!(map.get(u32::MAX), Some(&u32::MAX));
        // Numbers a thousand apart: the vector stays within its limit of the count held.
        for i in 0..2_000u32 {
            map.insert(i * 1_000, i);
        }
        assert_eq!(map.len, 2_004);
        assert!(
            map.dense.len() <= DENSE_MIN + map.len * DENSE_PER_ENTRY,
            "{} slots for {} numbers",
            map.dense.len(),
            map.len
        );
        for i in 0..2_000u32 {
            assert_eq!(map.get(i * 1_000), Some(&i), "number {}", i * 1_000);
        }
        assert_eq!(map.get(1_500), None);
        assert_eq!(map.remove(u32::MAX), Some(u32::MAX));
        assert_eq!(map.get(u32::MAX), None);
    }

    #[test]
    fn a_number_is_held_once_wherever_it_went() {
        let mut map = WireMap::default();
        // 5000 goes to the hash map, then the vector grows over it.
        map.insert(5_000, "first");
        assert!(map.dense.is_empty());
        for wire in 1..=2_000 {
            map.insert(wire, "filler");
        }
        map.insert(6_000, "filler");
        assert!(map.dense.len() > 5_000, "the vector now covers 5000");
        assert_eq!(
            map.get(5_000),
            Some(&"first"),
            "still found in the hash map"
        );
        assert_eq!(
            map.insert(5_000, "second"),
            Some("first"),
            "replaced, not doubled"
        );
        assert_eq!(map.len, 2_002);
        assert_eq!(map.remove(5_000), Some("second"));
        assert_eq!(map.get(5_000), None, "no stale copy left behind");
        assert_eq!(map.remove(6_000), Some("filler"));
        assert_eq!(map.len, 2_000);
        // The same number again and again is one entry.
        for _ in 0..100 {
            map.insert(3, "again");
        }
        assert_eq!(map.len, 2_000);
        let mut drained: Vec<u32> = map.drain().map(|(wire, _)| wire).collect();
        drained.sort_unstable();
        assert_eq!(drained, (1..=2_000).collect::<Vec<_>>());
        assert!(map.len == 0);
        assert_eq!(map.get(3), None);
    }

    #[test]
    fn slots_at_the_end_are_given_back() {
        let mut map = WireMap::default();
        for wire in 1..=100 {
            map.insert(wire, ());
        }
        for wire in (1..=100).rev() {
            map.remove(wire);
        }
        assert!(map.dense.is_empty());
        assert!(map.len == 0);
    }
}
