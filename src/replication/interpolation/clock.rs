//! How far behind each owner's clock its values are shown, from how late its messages arrive.
//!
//! Every stamped mutation message gives one lateness sample: when it was read here minus when
//! its values were true on the owner (mapped to this clock). The median of the recent samples
//! is the network's share (one way, plus the wait for this app's next frame); the values must
//! be shown late enough that the next value is nearly always here already, so the delay adds
//! the spread up to the 95th percentile and one send interval, plus a margin.

use std::collections::VecDeque;

use super::InterpolationConfig;

/// Lateness samples ranked: about 4 s of messages at 60 Hz, so a percentile does not hop with
/// each message while a change of route still shows within seconds.
const WINDOW: usize = 256;
/// How fast the delay grows toward a larger target, in seconds per second. Growing means
/// showing the remote world slower than real time until it has fallen back far enough: at 0.2
/// it moves at 80 % speed for a moment, noticeable but no jump, and 20 ms are added in 100 ms.
const GROW: f64 = 0.2;
/// How fast it shrinks: 1 %, which nobody sees, so a delay that was needed once is given back
/// over seconds, and a link that is late now and then does not make it saw up and down.
const SHRINK: f64 = 0.01;
/// Send times kept to find the send interval from: half a second at 60 Hz.
const STAMPS: usize = 32;
/// Before this many samples the delay follows its target at once: there is nothing on screen
/// worth keeping smooth yet, and the first samples say little.
const WARMUP: usize = 8;

/// The timing of one owner's messages and the delay its values are shown with.
#[derive(Debug, Default)]
pub(crate) struct OwnerClock {
    /// Recent lateness samples in seconds, oldest first.
    lateness: VecDeque<f64>,
    /// The newest send time seen (on this app's clock): the owner has said everything that
    /// changed up to here, as far as what arrived tells.
    newest: Option<f64>,
    /// The send times of the last messages, in arrival order.
    stamps: VecDeque<f64>,
    /// The current delay: values are shown this long after they were true on the owner.
    delay: Option<f64>,
    /// The network's share of it (the median lateness) when it was last computed.
    network: f64,
}

impl OwnerClock {
    /// A message whose values were true at `sent` (this app's clock) was read at `now`.
    pub(crate) fn record(&mut self, sent: f64, now: f64) {
        if self.lateness.len() == WINDOW {
            self.lateness.pop_front();
        }
        self.lateness.push_back(now - sent);
        if self.stamps.len() == STAMPS {
            self.stamps.pop_front();
        }
        self.stamps.push_back(sent);
        self.newest = Some(self.newest.map_or(sent, |newest| newest.max(sent)));
    }

    /// The owner's send interval: the median gap between the recent send times in order.
    /// Messages overtake each other, get lost, and stop while nothing changes; the median of
    /// the gaps is the interval through all of that.
    fn interval(&self) -> f64 {
        let mut stamps: Vec<f64> = self.stamps.iter().copied().collect();
        stamps.sort_by(f64::total_cmp);
        let mut gaps: Vec<f64> = stamps
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .filter(|gap| *gap > 0.0)
            .collect();
        if gaps.is_empty() {
            return 0.0;
        }
        let middle = gaps.len() / 2;
        *gaps.select_nth_unstable_by(middle, f64::total_cmp).1
    }

    /// How far the owner's stream has come: its newest send time, on this app's clock.
    pub(crate) fn newest(&self) -> Option<f64> {
        self.newest
    }

    /// The delay the samples call for: (the network's share, the buffer's share).
    fn target(&self, config: &InterpolationConfig) -> Option<(f64, f64)> {
        if self.lateness.is_empty() {
            return None;
        }
        let mut ranked: Vec<f64> = self.lateness.iter().copied().collect();
        let last = ranked.len() - 1;
        let (_, high, _) = ranked.select_nth_unstable_by(last * 95 / 100, f64::total_cmp);
        let high = *high;
        let (_, median, _) = ranked.select_nth_unstable_by(last / 2, f64::total_cmp);
        let median = *median;
        let buffer = (high - median) + self.interval() + config.margin.as_secs_f64();
        let buffer = buffer.clamp(
            config.min_delay.as_secs_f64(),
            config
                .max_delay
                .as_secs_f64()
                .max(config.min_delay.as_secs_f64()),
        );
        Some((median, buffer))
    }

    /// Moves the delay toward its target over `dt` seconds: quickly up, slowly down. `None`
    /// until a stamped message arrived.
    pub(crate) fn advance(&mut self, dt: f64, config: &InterpolationConfig) -> Option<f64> {
        let (network, buffer) = self.target(config)?;
        let target = network + buffer;
        let delay = match self.delay {
            Some(delay) if self.lateness.len() >= WARMUP => {
                if target > delay {
                    delay + (target - delay).min(GROW * dt)
                } else {
                    delay - (delay - target).min(SHRINK * dt)
                }
            }
            _ => target,
        };
        self.delay = Some(delay);
        self.network = network;
        Some(delay)
    }

    /// The current delay and the share of it that is the buffer's (beyond the network's).
    pub(crate) fn delay(&self) -> Option<(f64, f64)> {
        self.delay
            .map(|delay| (delay, (delay - self.network).max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rng::SplitMix64;

    const FRAME: f64 = 1.0 / 60.0;

    /// Runs `seconds` of an owner sending every frame over a link of `latency` ± `jitter`
    /// (uniform), read at this app's frames; returns the clock.
    fn run(clock: &mut OwnerClock, start: f64, seconds: f64, latency: f64, jitter: f64) -> f64 {
        let config = InterpolationConfig::default();
        let mut rng = SplitMix64::new(7);
        let frames = (seconds / FRAME) as usize;
        let mut arrivals: Vec<(f64, f64)> = Vec::new();
        let mut now = start;
        for frame in 0..frames {
            let sent = start + frame as f64 * FRAME;
            let transit = latency + jitter * (f64::from(rng.unit()) * 2.0 - 1.0);
            arrivals.push((sent + transit, sent));
            now = sent;
            arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
            while arrivals.first().is_some_and(|(at, _)| *at <= now) {
                let (_, sent) = arrivals.remove(0);
                clock.record(sent, now);
            }
            clock.advance(FRAME, &config);
        }
        now
    }

    #[test]
    fn the_delay_covers_the_network_the_jitter_and_one_interval() {
        let mut clock = OwnerClock::default();
        run(&mut clock, 0.0, 10.0, 0.050, 0.020);
        let (delay, buffer) = clock.delay().expect("messages arrived");
        // Messages are read at frames: lateness is the transit (30 to 70 ms) rounded up to a
        // frame, 33, 50, 67 or 83 ms, with a median of 50 and a 95th percentile of 83 ms. The
        // next value must be here too: plus one 16.7 ms interval, plus the 5 ms margin.
        assert!(
            (0.095..0.115).contains(&delay),
            "the delay should be about 105 ms behind the owner, got {:.1} ms",
            delay * 1000.0
        );
        assert!(
            (0.045..0.065).contains(&buffer),
            "the buffer's share should be about 55 ms, got {:.1} ms",
            buffer * 1000.0
        );
    }

    #[test]
    fn a_steady_link_needs_little_more_than_one_interval() {
        let mut clock = OwnerClock::default();
        run(&mut clock, 0.0, 5.0, 0.030, 0.0);
        let (_, buffer) = clock.delay().expect("messages arrived");
        let config = InterpolationConfig::default();
        let expected = FRAME + config.margin.as_secs_f64();
        assert!(
            (buffer - expected).abs() < 0.002,
            "without jitter the buffer should be one interval plus the margin \
             ({:.1} ms), got {:.1} ms",
            expected * 1000.0,
            buffer * 1000.0
        );
    }

    #[test]
    fn the_delay_grows_fast_and_shrinks_slowly() {
        let mut clock = OwnerClock::default();
        let now = run(&mut clock, 0.0, 5.0, 0.030, 0.0);
        let (calm, _) = clock.delay().expect("sampled");
        // The route gets 60 ms slower.
        let now = run(&mut clock, now, 1.5, 0.090, 0.0);
        let (slow, _) = clock.delay().expect("sampled");
        assert!(
            slow > calm + 0.055,
            "within 1.5 s the delay should have grown by the 60 ms the link slowed, \
             {:.1} → {:.1} ms",
            calm * 1000.0,
            slow * 1000.0
        );
        // Back to fast: once the slow samples have left the window (about 4 s), it comes
        // down by 1 % of real time, so after 6 s it has given back only part of the 60 ms.
        run(&mut clock, now, 6.0, 0.030, 0.0);
        let (after, _) = clock.delay().expect("sampled");
        assert!(
            after < slow - 0.005 && after > calm + 0.030,
            "the delay should shrink, slowly (1 %): {:.1} → {:.1} ms",
            slow * 1000.0,
            after * 1000.0
        );
    }

    #[test]
    fn bounds_hold() {
        let config = InterpolationConfig {
            max_delay: Duration::from_millis(20),
            ..InterpolationConfig::default()
        };
        let mut clock = OwnerClock::default();
        for i in 0..100 {
            let sent = f64::from(i) * FRAME;
            // Wildly varying lateness: the buffer would want far more than 20 ms.
            clock.record(sent, sent + 0.05 + f64::from(i % 7) * 0.03);
            clock.advance(FRAME, &config);
        }
        let (_, buffer) = clock.delay().expect("sampled");
        assert!(
            buffer <= 0.020 + 1e-9,
            "the buffer must stay within max_delay, got {:.1} ms",
            buffer * 1000.0
        );
    }
}
