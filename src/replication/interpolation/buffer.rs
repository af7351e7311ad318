//! One entity's received values of one component, with the times they were true, and what to
//! show of them at a given moment.

use std::collections::VecDeque;

use bevy::prelude::*;

use super::{Interpolate, InterpolationConfig};
use crate::peer::PeerId;

/// Most values kept per entity: far more than a delay of 250 ms holds at 240 Hz, so only a
/// hostile or broken owner ever reaches it.
const MAX_SAMPLES: usize = 128;

/// The values of `C` received for a remote entity, kept so that [`C`](Component) can show
/// them a little late and smoothly (see [`interpolate`](super::InterpolationAppExt::interpolate)).
/// The plugin adds it to replicas of interpolated components and removes it when the entity
/// becomes this peer's own.
///
/// Game logic that wants the newest value as received (a hit test against where the owner
/// says the entity is, say) reads [`latest`](Self::latest). Change detection on this component
/// fires only when a value arrives, since the plugin's own bookkeeping bypasses it, so
/// `Changed<Snapshots<C>>` means "new data", unlike `Changed<C>`, which the displayed value
/// trips every frame it moves.
#[derive(Component, Debug, Clone)]
pub struct Snapshots<C> {
    /// Whose times the samples are on: a new owner's values start a new buffer.
    owner: Option<PeerId>,
    /// (time the value was true on this app's clock, value), oldest first; times increase.
    samples: VecDeque<(f64, C)>,
    latest: C,
    /// What was shown last: a blend starts from it.
    shown: Option<C>,
    /// When the value shown last frame was extrapolated, the time of the sample it went on
    /// from: if that changes (data came back, or turned out to have stopped), the switch is
    /// blended instead of jumped.
    extrapolated_from: Option<f64>,
    /// A blend in progress: from this value, since this time.
    blend: Option<(C, f64)>,
    /// The newest value is shown and nothing is pending: no need to write it again.
    resting: bool,
}

/// Where the play head of an owner's values is this frame.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Playhead {
    /// This app's clock now, in seconds.
    pub(crate) now: f64,
    /// The moment to show, on this app's clock: now minus the owner's delay. `None` before the
    /// owner's clock is known: then the newest value is shown as it is.
    pub(crate) at: Option<f64>,
    /// The newest send time of the owner's messages (on this clock).
    pub(crate) newest: Option<f64>,
}

/// What the samples say to show at a moment.
struct Target<C> {
    value: C,
    /// Extrapolated from the sample at this time.
    extrapolated_from: Option<f64>,
    /// It is the newest value, held.
    at_latest: bool,
}

fn smoothstep(x: f64) -> f32 {
    let x = x.clamp(0.0, 1.0);
    (x * x * (3.0 - 2.0 * x)) as f32
}

impl<C: Interpolate> Snapshots<C> {
    /// A buffer for a replica whose value is `current`.
    pub(crate) fn new(owner: PeerId, current: C) -> Self {
        Self {
            owner: Some(owner),
            samples: VecDeque::new(),
            latest: current,
            shown: None,
            extrapolated_from: None,
            blend: None,
            resting: false,
        }
    }

    /// The newest value received, as the owner sent it.
    pub fn latest(&self) -> &C {
        &self.latest
    }

    /// How many received values wait to be shown or are being shown between.
    pub fn buffered(&self) -> usize {
        self.samples.len()
    }

    /// A value that was true at `time` (this app's clock) on `owner`.
    pub(crate) fn push(&mut self, owner: PeerId, time: f64, value: C) {
        if self.owner != Some(owner) {
            self.samples.clear();
            self.owner = Some(owner);
        }
        while self.samples.back().is_some_and(|(last, _)| *last >= time) {
            self.samples.pop_back();
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((time, value.clone()));
        self.latest = value;
        self.resting = false;
    }

    /// A value without a time (a spawn, an insertion, or a mutation before the owner's clock
    /// was known): it is shown at once, and the buffer starts over from it.
    pub(crate) fn restart(&mut self, value: C) {
        self.samples.clear();
        self.blend = None;
        self.extrapolated_from = None;
        self.shown = Some(value.clone());
        self.latest = value;
        self.resting = true;
    }

    /// The value to show now, or `None` when what is shown needs no change.
    pub(crate) fn show(&mut self, head: Playhead, config: &InterpolationConfig) -> Option<C> {
        let target = self.target(head, config);
        let jumped =
            self.extrapolated_from.is_some() && target.extrapolated_from != self.extrapolated_from;
        self.extrapolated_from = target.extrapolated_from;
        if jumped && let Some(shown) = self.shown.clone() {
            self.blend = Some((shown, head.now));
        }
        let teleport = config.teleport_distance;
        let blend_time = config.blend_time.as_secs_f64();
        let value = match self.blend.take() {
            Some((from, since)) => {
                let progress = if blend_time > 0.0 {
                    (head.now - since) / blend_time
                } else {
                    1.0
                };
                if progress >= 1.0 || from.distance(&target.value) > teleport {
                    target.value
                } else {
                    let value = from.interpolate(&target.value, smoothstep(progress));
                    self.blend = Some((from, since));
                    value
                }
            }
            None => target.value,
        };
        let resting = target.at_latest && self.blend.is_none();
        if resting && self.resting {
            return None;
        }
        self.resting = resting;
        self.shown = Some(value.clone());
        Some(value)
    }

    fn target(&mut self, head: Playhead, config: &InterpolationConfig) -> Target<C> {
        let latest = Target {
            value: self.latest.clone(),
            extrapolated_from: None,
            at_latest: true,
        };
        let Some(at) = head.at else {
            return latest;
        };
        // Keep one sample at or before the play head, and two at least to extrapolate from.
        while self.samples.len() > 2 && self.samples[1].0 <= at {
            self.samples.pop_front();
        }
        let Some((first, first_value)) = self.samples.front() else {
            return latest;
        };
        if at <= *first {
            // Not there yet (the first values from this owner): wait at the first.
            return Target {
                value: first_value.clone(),
                extrapolated_from: None,
                at_latest: self.samples.len() == 1,
            };
        }
        let teleport = config.teleport_distance;
        for index in 1..self.samples.len() {
            let (before, from) = &self.samples[index - 1];
            let (after, to) = &self.samples[index];
            if at < *after {
                let value = if from.distance(to) > teleport {
                    from.clone()
                } else {
                    from.interpolate(to, ((at - before) / (after - before)) as f32)
                };
                return Target {
                    value,
                    extrapolated_from: None,
                    at_latest: false,
                };
            }
        }
        // Past the newest value. If the owner's stream has gone further without it, it did not
        // change: hold it. Otherwise its values are late: go on along the last two for a while.
        let stopped = head.newest.is_some_and(|newest| newest >= at);
        let len = self.samples.len();
        if stopped || len < 2 {
            return latest;
        }
        let (before, from) = &self.samples[len - 2];
        let (last, to) = &self.samples[len - 1];
        let ahead = at - last;
        let max = config.max_extrapolation.as_secs_f64();
        if from.distance(to) > teleport || ahead > max + config.max_hold.as_secs_f64() {
            // Nothing to go on from, or nothing came for too long: ease back to the newest.
            return latest;
        }
        let t = 1.0 + ahead.min(max) / (last - before);
        Target {
            value: from.interpolate(to, t as f32),
            extrapolated_from: Some(*last),
            at_latest: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const OWNER: PeerId = PeerId(1);
    const TICK: f64 = 1.0 / 60.0;

    fn config() -> InterpolationConfig {
        InterpolationConfig {
            max_extrapolation: Duration::from_millis(50),
            max_hold: Duration::from_millis(200),
            blend_time: Duration::from_millis(100),
            teleport_distance: 10.0,
            ..InterpolationConfig::default()
        }
    }

    fn head(now: f64, delay: f64, newest: Option<f64>) -> Playhead {
        Playhead {
            now,
            at: Some(now - delay),
            newest,
        }
    }

    /// A buffer with values x = t (1 unit per second) sent every tick up to `until`.
    fn moving(until: f64) -> Snapshots<f32> {
        let mut buffer = Snapshots::new(OWNER, 0.0);
        let mut t = 0.0;
        while t <= until + 1e-9 {
            buffer.push(OWNER, t, t as f32);
            t += TICK;
        }
        buffer
    }

    #[test]
    fn shows_the_value_of_the_moment_between_two_samples() {
        let mut buffer = moving(1.0);
        let shown = buffer.show(head(1.0, 0.1, Some(1.0)), &config());
        let shown = shown.expect("a moving value is written");
        assert!((shown - 0.9).abs() < 1e-5, "at 0.9 s x is 0.9, got {shown}");
        assert!(
            buffer.buffered() <= 8,
            "samples behind the play head are dropped"
        );
    }

    #[test]
    fn extrapolates_for_a_while_when_data_is_late_then_holds() {
        let mut buffer = moving(1.0);
        let config = config();
        // The stream stopped at 1.0: nothing newer from this owner at all.
        let shown = buffer.show(head(1.13, 0.1, Some(1.0)), &config).unwrap();
        assert!(
            (shown - 1.03).abs() < 1e-4,
            "30 ms ahead of the data: {shown}"
        );
        let shown = buffer.show(head(1.2, 0.1, Some(1.0)), &config).unwrap();
        assert!(
            (shown - 1.05).abs() < 1e-4,
            "no further than max_extrapolation (50 ms): {shown}"
        );
        let shown = buffer.show(head(1.3, 0.1, Some(1.0)), &config).unwrap();
        assert!((shown - 1.05).abs() < 1e-4, "then it holds: {shown}");
    }

    #[test]
    fn a_value_that_stopped_changing_is_held_not_extrapolated() {
        let mut buffer = moving(1.0);
        // The owner's messages went on to 1.5 s without this value: it stopped at 1.0.
        let shown = buffer.show(head(1.2, 0.1, Some(1.5)), &config()).unwrap();
        assert_eq!(shown, 1.0);
        assert_eq!(
            buffer.show(head(1.3, 0.1, Some(1.5)), &config()),
            None,
            "a value at rest is not written again"
        );
    }

    #[test]
    fn data_that_resumes_is_blended_into_without_a_jump() {
        let config = config();
        let mut buffer = moving(1.0);
        let mut now = 1.1;
        let mut last = buffer.show(head(now, 0.1, Some(1.0)), &config).unwrap();
        // Dry for 100 ms: extrapolated 50 ms, then held at 1.05.
        while now < 1.2 {
            now += TICK;
            last = buffer.show(head(now, 0.1, Some(1.0)), &config).unwrap();
        }
        // The late values arrive, but the owner slowed down: x = 1.0 + (t - 1.0) / 2.
        let mut t = 1.0 + TICK;
        while t < 1.6 {
            buffer.push(OWNER, t, (1.0 + (t - 1.0) / 2.0) as f32);
            t += TICK;
        }
        let mut biggest_step = 0.0f32;
        for _ in 0..30 {
            now += TICK;
            let shown = buffer.show(head(now, 0.1, Some(1.6)), &config).unwrap();
            biggest_step = biggest_step.max((shown - last).abs());
            last = shown;
        }
        let expected = 1.0 + (now - 0.1 - 1.0) / 2.0;
        assert!(
            (f64::from(last) - expected).abs() < 1e-4,
            "after the blend it shows the data: {last} vs {expected}"
        );
        // At 1 unit/s a frame moves 0.017; the correction (about 0.05 over 100 ms) adds a little.
        assert!(
            biggest_step < 0.025,
            "the switch back should be blended, not jumped: a step of {biggest_step}"
        );
    }

    #[test]
    fn a_dry_buffer_eases_back_to_the_newest_value_after_max_hold() {
        let config = config();
        let mut buffer = moving(1.0);
        let mut now = 1.1;
        let mut shown = 0.0;
        // 50 ms extrapolation + 200 ms hold, then a 100 ms blend back to 1.0.
        while now < 1.6 {
            shown = buffer
                .show(head(now, 0.1, Some(1.0)), &config)
                .unwrap_or(shown);
            now += TICK;
        }
        assert_eq!(shown, 1.0, "it should end where the data ended");
    }

    #[test]
    fn a_jump_beyond_the_teleport_distance_snaps_at_its_time() {
        let config = config();
        let mut buffer = Snapshots::new(OWNER, 0.0);
        buffer.push(OWNER, 0.0, 0.0f32);
        buffer.push(OWNER, 0.1, 100.0);
        buffer.push(OWNER, 0.2, 100.5);
        let before = buffer.show(head(0.15, 0.1, Some(0.2)), &config).unwrap();
        assert_eq!(
            before, 0.0,
            "before its time the teleport is not shown, nor swept"
        );
        let after = buffer.show(head(0.25, 0.1, Some(0.2)), &config).unwrap();
        assert!(
            (after - 100.25).abs() < 1e-3,
            "then it is there at once: {after}"
        );
    }

    #[test]
    fn a_new_owner_starts_a_new_buffer_and_untimed_values_show_at_once() {
        let mut buffer = moving(1.0);
        buffer.push(PeerId(2), 5.0, 42.0);
        assert_eq!(buffer.buffered(), 1);
        assert_eq!(*buffer.latest(), 42.0);
        buffer.restart(7.0);
        assert_eq!(buffer.buffered(), 0);
        assert_eq!(
            buffer.show(head(6.0, 0.1, Some(5.0)), &config()),
            None,
            "an untimed value is already shown"
        );
        assert_eq!(*buffer.latest(), 7.0);
    }

    #[test]
    fn without_the_owners_clock_the_newest_value_is_shown() {
        let mut buffer = moving(1.0);
        let head = Playhead {
            now: 1.0,
            at: None,
            newest: None,
        };
        let shown = buffer.show(head, &config()).unwrap();
        assert!((shown - 1.0).abs() < 1e-5);
    }
}
