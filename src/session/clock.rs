//! A peer's clock offset and the jitter of its packets, from the time frames of unreliable
//! packets (see `frame.rs`). Times are the `now` values each side's session is given, so the
//! offset is between the two apps' clocks, whatever those count from.

use std::collections::VecDeque;
use std::time::Duration;

/// How many recent round trips the filter ranks a new sample against. At 15 to 20 samples a
/// second this is 3 to 4 s: long enough to hold some quiet moments of the link, short enough to
/// follow a route that changes.
const WINDOW: usize = 64;
/// Weight of an accepted sample in the running offset. Once the filter has thrown out the
/// delayed samples, what is left is off by half the difference of two short legs, which varies
/// randomly around zero when jitter is symmetric: only averaging many of them makes it small.
/// 1/32 averages about the last 60 accepted samples (15 s at a quarter of 15 to 20 a second);
/// the two clocks drift apart by at most about a millisecond over that (tens of parts per
/// million), and usually far less.
const GAIN: f64 = 1.0 / 32.0;

/// `a - b` in seconds, signed.
fn signed_secs(a: Duration, b: Duration) -> f64 {
    (a.as_nanos() as i128 - b.as_nanos() as i128) as f64 / 1e9
}

/// One NTP-style exchange: we sent a packet at `sent` (our clock), the peer received it, held
/// it for `held`, and answered at `answered` (its clock); the answer arrived at `received`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub(crate) sent: Duration,
    pub(crate) held: Duration,
    pub(crate) answered: Duration,
    pub(crate) received: Duration,
}

impl Exchange {
    /// The peer's clock minus ours, in seconds, assuming both legs took equally long:
    /// `((t1 - t0) + (t2 - t3)) / 2`, with `t1 = t2 - held`.
    fn offset(&self) -> f64 {
        let there = signed_secs(self.answered, self.sent) - self.held.as_secs_f64();
        let back = signed_secs(self.answered, self.received);
        (there + back) / 2.0
    }

    /// Time on the wire both ways: `(t3 - t0) - (t2 - t1)`. The offset of a sample is off by
    /// at most half of the difference between its two legs, so a short one is a good one.
    fn round_trip(&self) -> f64 {
        signed_secs(self.received, self.sent) - self.held.as_secs_f64()
    }
}

/// The peer's clock offset, from the samples with the least delay on the wire.
///
/// Queueing and jitter only ever lengthen a leg, and an offset sample is off by half the
/// difference of its legs: the samples with the shortest round trips have the least room for
/// error (the NTP and Chrony clock filters rest on the same observation). A sample counts only
/// if its round trip is among the shortest quarter of the last [`WINDOW`]; the estimate is a
/// running average of those (exact for the first few, then with weight [`GAIN`]).
#[derive(Debug, Default)]
pub(crate) struct ClockEstimator {
    /// Round trips of the last samples, in seconds, oldest first.
    round_trips: VecDeque<f64>,
    accepted: u32,
    offset: Option<f64>,
}

impl ClockEstimator {
    pub(crate) fn sample(&mut self, exchange: Exchange) {
        if self.round_trips.len() == WINDOW {
            self.round_trips.pop_front();
        }
        let round_trip = exchange.round_trip();
        self.round_trips.push_back(round_trip);
        let mut ranked: Vec<f64> = self.round_trips.iter().copied().collect();
        let quartile = (ranked.len() - 1) / 4;
        let (_, threshold, _) = ranked.select_nth_unstable_by(quartile, f64::total_cmp);
        if round_trip > *threshold {
            return;
        }
        self.accepted = self.accepted.saturating_add(1);
        let gain = (1.0 / f64::from(self.accepted)).max(GAIN);
        let sample = exchange.offset();
        let offset = self.offset.get_or_insert(sample);
        *offset += (sample - *offset) * gain;
    }

    /// The peer's clock minus ours, in seconds; `None` before the first sample.
    pub(crate) fn offset(&self) -> Option<f64> {
        self.offset
    }
}

/// Interarrival jitter of the peer's packets, as RFC 3550 (RTP) defines it: the smoothed
/// change, from one timestamped packet to the next, of how long they took to arrive. Clock
/// offsets cancel out, so it needs no synchronised clocks.
#[derive(Debug, Default)]
pub(crate) struct JitterEstimator {
    /// Arrival minus sending time of the last timestamped packet, in seconds (offset included).
    last_transit: Option<f64>,
    jitter: Option<f64>,
}

impl JitterEstimator {
    /// A packet the peer sent at `sent` (its clock) arrived at `received` (ours).
    pub(crate) fn sample(&mut self, sent: Duration, received: Duration) {
        let transit = signed_secs(received, sent);
        if let Some(last) = self.last_transit.replace(transit) {
            let change = (transit - last).abs();
            // RFC 3550 starts from zero; starting from the first change shows a figure of the
            // right size at once instead of creeping up over the first sixteen packets.
            let jitter = self.jitter.get_or_insert(change);
            *jitter += (change - *jitter) / 16.0;
        }
    }

    /// `None` until two timestamped packets arrived.
    pub(crate) fn jitter(&self) -> Option<Duration> {
        self.jitter
            .map(|secs| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_exchange_with_equal_legs_gives_the_exact_offset() {
        // Their clock is 1 s ahead; 20 ms each way, held 7 ms.
        let exchange = Exchange {
            sent: 100 * MS,
            held: 7 * MS,
            answered: 1000 * MS + 127 * MS,
            received: 147 * MS,
        };
        assert!((exchange.offset() - 1.0).abs() < 1e-9, "offset 1 s");
        assert!(
            (exchange.round_trip() - 0.040).abs() < 1e-9,
            "40 ms on the wire"
        );
    }

    #[test]
    fn the_shortest_round_trips_win_over_delayed_ones() {
        let mut clock = ClockEstimator::default();
        for i in 0..WINDOW as u32 {
            // Every fourth sample is quick and even; the others queued 30 ms on the way out,
            // which drags their offset 15 ms low.
            let out = if i % 4 == 0 { 10 * MS } else { 40 * MS };
            let sent = i * 50 * MS;
            clock.sample(Exchange {
                sent,
                held: MS,
                answered: sent + out + MS + 500 * MS,
                received: sent + out + 11 * MS,
            });
        }
        let offset = clock.offset().expect("sampled");
        assert!(
            (offset - 0.5).abs() < 1e-6,
            "only the undelayed samples should count, got {offset}"
        );
    }

    #[test]
    fn jitter_is_the_smoothed_change_in_transit_time() {
        let mut jitter = JitterEstimator::default();
        assert_eq!(jitter.jitter(), None);
        for i in 0..200u32 {
            // Transit alternates between 40 and 44 ms: every change is 4 ms.
            let transit = if i % 2 == 0 { 40 * MS } else { 44 * MS };
            jitter.sample(i * 50 * MS + 3 * MS, i * 50 * MS + transit);
        }
        let got = jitter.jitter().expect("sampled");
        assert!(
            got.abs_diff(4 * MS) < Duration::from_micros(10),
            "jitter should settle at the 4 ms change, got {got:?}"
        );
    }
}
