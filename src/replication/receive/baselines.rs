//! Values sent as differences, the receiver's side: the last [`BASELINES_KEPT`] values of each
//! entity's component from one owner, labelled with the tick of the message that carried them,
//! which later differences name (see `send/baselines.rs` for the owner's side).
//!
//! What this keeps is bounded: per owner, at most as many values as the entities it may own
//! here times the components sent as differences, each at most `MAX_BASELINE_LEN` (64 bytes)
//! long. A value that does not fit is not kept,
//! and a difference from it is refused (the owner then sends it whole).

use super::super::codec::{BASELINES_KEPT, MAX_BASELINE_LEN};
use super::super::ownership::WireMap;

/// Values up to this long are kept inside the entry (a moving transform takes 13 bytes): no
/// pointer to chase.
const INLINE: usize = 16;

/// Where the values of one entity's component are.
#[derive(Debug)]
// Inline is the common case and the point.
#[allow(clippy::large_enum_variant)]
enum Slots {
    Inline([[u8; INLINE]; BASELINES_KEPT]),
    /// `stride` bytes per slot, once a value longer than [`INLINE`] came.
    Heap {
        stride: usize,
        bytes: Box<[u8]>,
    },
}

/// The last values of one entity's component.
#[derive(Debug)]
pub(super) struct Kept {
    /// The tick of each slot's value; 0 for an empty slot (no message has tick 0).
    ticks: [u32; BASELINES_KEPT],
    lens: [u16; BASELINES_KEPT],
    slots: Slots,
}

impl Kept {
    fn new() -> Self {
        Self {
            ticks: [0; BASELINES_KEPT],
            lens: [0; BASELINES_KEPT],
            slots: Slots::Inline([[0; INLINE]; BASELINES_KEPT]),
        }
    }

    fn slot(&self, slot: usize) -> &[u8] {
        let len = usize::from(self.lens[slot]);
        match &self.slots {
            Slots::Inline(values) => &values[slot][..len],
            Slots::Heap { stride, bytes } => &bytes[slot * stride..slot * stride + len],
        }
    }

    /// The value the message of `tick` carried, if it is kept.
    pub(super) fn get(&self, tick: u32) -> Option<&[u8]> {
        if tick == 0 {
            return None;
        }
        let slot = self.ticks.iter().position(|kept| *kept == tick)?;
        Some(self.slot(slot))
    }

    /// Keeps `value` of `tick` in place of the oldest, unless it is older than every value kept
    /// or too long to keep.
    pub(super) fn keep(&mut self, tick: u32, value: &[u8]) {
        if value.len() > MAX_BASELINE_LEN || self.ticks.contains(&tick) {
            return; // the same message twice
        }
        let (slot, oldest) = self
            .ticks
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(_, kept)| *kept)
            .unwrap_or((0, 0));
        if oldest > tick {
            return;
        }
        self.write(slot, value);
        self.ticks[slot] = tick;
        self.lens[slot] = value.len() as u16;
    }

    fn write(&mut self, slot: usize, value: &[u8]) {
        let fits = match &self.slots {
            Slots::Inline(_) => value.len() <= INLINE,
            Slots::Heap { stride, .. } => value.len() <= *stride,
        };
        if !fits {
            self.widen(value.len());
        }
        match &mut self.slots {
            Slots::Inline(values) => values[slot][..value.len()].copy_from_slice(value),
            Slots::Heap { stride, bytes } => {
                bytes[slot * *stride..slot * *stride + value.len()].copy_from_slice(value);
            }
        }
    }

    /// Makes every slot at least `len` bytes long, keeping what they hold.
    fn widen(&mut self, len: usize) {
        let stride = len.max(INLINE * 2);
        let mut bytes = vec![0; stride * BASELINES_KEPT].into_boxed_slice();
        for slot in 0..BASELINES_KEPT {
            let value = self.slot(slot);
            bytes[slot * stride..slot * stride + value.len()].copy_from_slice(value);
        }
        self.slots = Slots::Heap { stride, bytes };
    }
}

/// The baselines of one owner's values, by entity number, then component.
#[derive(Debug, Default)]
pub(super) struct ReceivedBaselines {
    values: WireMap<Vec<(u16, Kept)>>,
    /// How many components' values are kept, over every entity.
    count: usize,
}

impl ReceivedBaselines {
    /// The value of `wire`'s `component` that the message of `tick` carried, if it is kept.
    #[cfg(test)]
    fn get(&mut self, wire: u32, component: u16, tick: u32) -> Option<&[u8]> {
        self.kept(wire, component)?.get(tick)
    }

    /// The values of `wire`'s `component` kept, if any: what reading a difference needs, then
    /// where its value is kept (one lookup for both).
    pub(super) fn kept(&mut self, wire: u32, component: u16) -> Option<&mut Kept> {
        let components = self.values.get_mut(wire)?;
        components
            .iter_mut()
            .find(|(of, _)| *of == component)
            .map(|(_, kept)| kept)
    }

    /// Keeps a value the message of `tick` carried, if there is room: at most `limit` entities'
    /// components.
    pub(super) fn keep(
        &mut self,
        wire: u32,
        component: u16,
        tick: u32,
        value: &[u8],
        limit: usize,
    ) {
        if value.len() > MAX_BASELINE_LEN {
            return;
        }
        let room = self.count < limit;
        if !self.values.contains(wire) {
            if !room {
                return;
            }
            self.values.insert(wire, Vec::new());
        }
        let Some(components) = self.values.get_mut(wire) else {
            return;
        };
        match components.iter_mut().find(|(of, _)| *of == component) {
            Some((_, kept)) => kept.keep(tick, value),
            None if room => {
                let mut kept = Kept::new();
                kept.keep(tick, value);
                components.push((component, kept));
                self.count += 1;
            }
            None => {}
        }
    }

    /// The entity `wire` is gone (despawned, or handed over): its number may name another.
    pub(super) fn forget(&mut self, wire: u32) {
        if let Some(components) = self.values.remove(wire) {
            self.count -= components.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_values_are_kept() {
        let mut baselines = ReceivedBaselines::default();
        let last = BASELINES_KEPT as u32 + 12;
        for tick in 1..=last {
            // Values grow: past 16 bytes the slots move out of line and keep what they held.
            let value = vec![tick as u8; tick as usize];
            baselines.keep(7, 0, tick, &value, 10);
        }
        for tick in 1..=12 {
            assert_eq!(
                baselines.get(7, 0, tick),
                None,
                "tick {tick} was pushed out"
            );
        }
        for tick in 13..=last {
            let expected = vec![tick as u8; tick as usize];
            assert_eq!(baselines.get(7, 0, tick), Some(expected.as_slice()));
        }
        baselines.keep(7, 0, 3, b"late", 10);
        assert_eq!(baselines.get(7, 0, 3), None, "older than every value kept");
        assert_eq!(baselines.get(7, 0, 0), None, "no message has tick 0");
        baselines.forget(7);
        assert_eq!(baselines.get(7, 0, last), None);
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let mut baselines = ReceivedBaselines::default();
        for wire in 0..10 {
            baselines.keep(wire, 0, 1, b"v", 4);
        }
        assert_eq!(baselines.count, 4, "at most the limit");
        baselines.keep(0, 0, 2, &[0; MAX_BASELINE_LEN + 1], 4);
        assert_eq!(baselines.get(0, 0, 2), None, "too long to keep");
    }
}
