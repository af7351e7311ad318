//! The owner's tick of the newest value applied to a replica, per component: the newest value
//! wins. Held inline for the first few components, so checking a value reads the memory the
//! entity's number already brought in.

/// Components whose ticks are held inline; more go to a vector.
const INLINE: usize = 4;

/// Ticks by component index; a component with no tick has tick 0 (no message has it).
#[derive(Debug, Default)]
pub(super) struct Ticks {
    len: u8,
    components: [u16; INLINE],
    ticks: [u32; INLINE],
    more: Vec<(u16, u32)>,
}

impl Ticks {
    /// The tick of the newest value of `component` applied.
    pub(super) fn get(&self, component: u16) -> u32 {
        match self.slot(component) {
            Some(slot) => self.ticks[slot],
            None => self
                .more
                .iter()
                .find(|(c, _)| *c == component)
                .map_or(0, |(_, t)| *t),
        }
    }

    pub(super) fn set(&mut self, component: u16, tick: u32) {
        if let Some(slot) = self.slot(component) {
            self.ticks[slot] = tick;
        } else if let Some(entry) = self.more.iter_mut().find(|(c, _)| *c == component) {
            entry.1 = tick;
        } else if usize::from(self.len) < INLINE {
            let slot = usize::from(self.len);
            self.components[slot] = component;
            self.ticks[slot] = tick;
            self.len += 1;
        } else {
            self.more.push((component, tick));
        }
    }

    /// Records a value of `tick` if it is newer than the one applied; says whether it was.
    pub(super) fn advance(&mut self, component: u16, tick: u32) -> bool {
        if let Some(slot) = self.slot(component) {
            let newer = tick > self.ticks[slot];
            if newer {
                self.ticks[slot] = tick;
            }
            return newer;
        }
        let newer = tick > self.get(component);
        if newer {
            self.set(component, tick);
        }
        newer
    }

    fn slot(&self, component: u16) -> Option<usize> {
        self.components[..usize::from(self.len)]
            .iter()
            .position(|c| *c == component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_component_keeps_its_newest_tick_inline_or_not() {
        let mut ticks = Ticks::default();
        let components = INLINE as u16 + 3;
        for component in 0..components {
            assert_eq!(ticks.get(component), 0);
            assert!(ticks.advance(component, 10 + u32::from(component)));
        }
        assert!(!ticks.more.is_empty(), "past the inline ones");
        for component in 0..components {
            let tick = 10 + u32::from(component);
            assert_eq!(ticks.get(component), tick);
            assert!(!ticks.advance(component, tick), "the same tick again");
            assert!(!ticks.advance(component, tick - 1), "an older tick");
            assert!(ticks.advance(component, tick + 5));
            ticks.set(component, 1);
            assert_eq!(ticks.get(component), 1, "set, even backwards");
        }
        assert_eq!(ticks.get(u16::MAX), 0, "never seen");
    }
}
