//! The bandwidth budget: how many bytes replication may send one peer, and which waiting values
//! go first when they do not all fit.
//!
//! Each peer has a token bucket of bytes ([`TokenBucket`]), refilled at
//! [`ReplicationConfig::bandwidth_budget`](crate::replication::ReplicationConfig::bandwidth_budget)
//! bytes per second up to a burst. Reliable updates are charged to it but never held back (the
//! bucket may go into debt); mutations take what is left. When the values owed to a peer do
//! not fit, each one gets a score, the priority it accumulated while waiting plus its entity's
//! [`ReplicationPriority`] for this tick ([`choose`]): the highest scores go, in order, until
//! the next one does not fit; a value sent starts again from zero, a value held back keeps its
//! score and is owed (its newest value, encoded when it goes). Since every waiting value's
//! score grows each tick and the bucket always refills to at least one full packet, every value
//! goes within a bounded number of ticks.

use std::cmp::Ordering;
use std::time::Duration;

use bevy::prelude::*;

use super::super::ReplicationPriority;

/// How much of the budget may be saved up while there is nothing to send: a spike of changes
/// up to this much of the budget goes out in the tick it happens.
const BURST: Duration = Duration::from_millis(100);

/// How far reliable traffic may run the bucket into debt: a reliable burst beyond it (a big
/// snapshot to a newcomer) is not paid for in full, so mutations resume within this much time.
const MAX_DEBT: Duration = Duration::from_secs(1);

/// The lowest priority an entity accumulates per tick: a zero, negative or NaN priority would
/// never get its turn.
const MIN_PRIORITY: f32 = 0.01;

/// A peer's budget: the bytes replication may send it now. Negative after reliable traffic that
/// did not fit: mutations wait until it is paid off.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TokenBucket {
    tokens: f64,
    refilled_at: Option<Duration>,
}

/// The budget's figures for one tick, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rate {
    bytes_per_sec: f64,
    /// The most the bucket holds: [`BURST`] of the budget, and at least one full mutation
    /// message so that any single value fits eventually.
    burst: f64,
    max_debt: f64,
}

impl Rate {
    /// The rate for `bytes_per_sec`, whose mutation messages are at most `max_message` bytes.
    pub(super) fn new(bytes_per_sec: u32, max_message: usize) -> Self {
        let bytes_per_sec = f64::from(bytes_per_sec);
        Self {
            bytes_per_sec,
            burst: (bytes_per_sec * BURST.as_secs_f64()).max(max_message as f64),
            max_debt: bytes_per_sec * MAX_DEBT.as_secs_f64(),
        }
    }
}

impl TokenBucket {
    /// Adds what the time since the last refill earned, up to the burst. A new peer starts with
    /// a full bucket.
    pub(super) fn refill(&mut self, now: Duration, rate: Rate) {
        self.tokens = match self.refilled_at {
            None => rate.burst,
            Some(last) => {
                let earned = rate.bytes_per_sec * now.saturating_sub(last).as_secs_f64();
                (self.tokens + earned).min(rate.burst)
            }
        };
        self.refilled_at = Some(now);
    }

    /// Takes `bytes` that were sent, into debt if need be (bounded by the rate's debt).
    pub(super) fn charge(&mut self, bytes: usize, rate: Rate) {
        self.tokens = (self.tokens - bytes as f64).max(-rate.max_debt);
    }

    /// Bytes that may be sent now.
    pub(super) fn available(&self) -> usize {
        self.tokens.max(0.0) as usize
    }
}

/// What a value owed to a peer accumulated while the budget held it back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Waiting {
    /// Its score when it was last held back.
    pub(super) priority: f32,
    /// The tick it was first held back.
    pub(super) since: u32,
}

/// A value that could go to a peer this tick.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    /// Where it is among the tick's entries.
    pub(super) index: usize,
    /// What it accumulated while waiting plus this tick's share: higher goes first.
    pub(super) score: f32,
    /// What it costs, in bytes.
    pub(super) size: usize,
    /// Ties go to the entity that was spawned first, then to the component registered first,
    /// so that the order is the same on every run.
    pub(super) entity: Entity,
    pub(super) component: u16,
}

impl Candidate {
    /// A value whose entity has `priority` and which accumulated `waiting` so far.
    pub(super) fn score(priority: Option<&ReplicationPriority>, waiting: Option<Waiting>) -> f32 {
        let share = priority.map_or(1.0, |priority| priority.0);
        // `max` turns NaN into the minimum too.
        let share = share.max(MIN_PRIORITY);
        waiting.map_or(0.0, |waiting| waiting.priority) + share
    }

    fn order(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.entity.cmp(&other.entity))
            .then_with(|| self.component.cmp(&other.component))
    }
}

/// Sorts `candidates` by score, highest first, and returns how many of the first fit in
/// `available` bytes. It stops at the first that does not fit rather than skipping to smaller
/// ones: a big value at the top would otherwise lose every tick to small ones behind it, while
/// the bytes left over stay in the bucket for it.
pub(super) fn choose(candidates: &mut [Candidate], available: usize) -> usize {
    candidates.sort_by(Candidate::order);
    let mut spent = 0;
    candidates
        .iter()
        .take_while(|candidate| {
            spent += candidate.size;
            spent <= available
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_nanos(16_666_667);

    /// `n` values of `size` bytes, all of priority 1 except those in `high` (priority `boost`),
    /// scheduled for `ticks` ticks with `per_tick` bytes of budget, each changing every tick.
    /// Returns, per value, the ticks it went out.
    fn schedule(
        n: usize,
        size: usize,
        per_tick: usize,
        ticks: u32,
        high: &[usize],
        boost: f32,
    ) -> Vec<Vec<u32>> {
        let mut waiting: Vec<Option<Waiting>> = vec![None; n];
        let mut sent = vec![Vec::new(); n];
        for tick in 0..ticks {
            let mut candidates: Vec<Candidate> = (0..n)
                .map(|index| {
                    let priority =
                        ReplicationPriority(if high.contains(&index) { boost } else { 1.0 });
                    Candidate {
                        index,
                        score: Candidate::score(Some(&priority), waiting[index]),
                        size,
                        entity: Entity::from_raw_u32(index as u32 + 1).unwrap(),
                        component: 0,
                    }
                })
                .collect();
            let fit = choose(&mut candidates, per_tick);
            for (rank, candidate) in candidates.iter().enumerate() {
                if rank < fit {
                    waiting[candidate.index] = None;
                    sent[candidate.index].push(tick);
                } else {
                    waiting[candidate.index] = Some(Waiting {
                        priority: candidate.score,
                        since: waiting[candidate.index].map_or(tick, |w| w.since),
                    });
                }
            }
        }
        sent
    }

    fn longest_gap(ticks: &[u32]) -> u32 {
        ticks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
    }

    #[test]
    fn equal_priorities_take_turns_so_nothing_starves() {
        // 100 values, room for 10 a tick: each goes every 10 ticks, none waits longer.
        let sent = schedule(100, 20, 200, 200, &[], 1.0);
        for (index, ticks) in sent.iter().enumerate() {
            assert!(
                ticks.first().is_some_and(|first| *first < 10),
                "value {index} should first go within 10 ticks, went at {ticks:?}"
            );
            assert_eq!(
                longest_gap(ticks),
                10,
                "value {index} should go every 10 ticks (100 values, 10 a tick)"
            );
        }
    }

    #[test]
    fn a_higher_priority_goes_more_often_and_the_others_still_get_their_turn() {
        // Value 0 has four times the priority of the 99 others.
        let sent = schedule(100, 20, 200, 600, &[0], 4.0);
        let high = sent[0].len();
        let low = sent[1..].iter().map(Vec::len).min().unwrap();
        assert!(
            high >= 3 * low,
            "priority 4 should go about four times as often as priority 1: {high} vs {low}"
        );
        let worst = sent[1..].iter().map(|t| longest_gap(t)).max().unwrap();
        assert!(
            worst <= 12,
            "a priority-1 value should still go at least every 12 ticks, waited {worst}"
        );
    }

    #[test]
    fn zero_and_nan_priorities_still_accumulate() {
        for bad in [0.0, -5.0, f32::NAN] {
            let score = Candidate::score(Some(&ReplicationPriority(bad)), None);
            assert!(
                score > 0.0,
                "priority {bad} should count as a small positive one"
            );
        }
    }

    #[test]
    fn a_big_value_at_the_top_is_not_overtaken_by_small_ones() {
        let entity = |n| Entity::from_raw_u32(n).unwrap();
        let mut candidates = vec![
            Candidate {
                index: 0,
                score: 5.0,
                size: 900,
                entity: entity(1),
                component: 0,
            },
            Candidate {
                index: 1,
                score: 1.0,
                size: 10,
                entity: entity(2),
                component: 0,
            },
        ];
        assert_eq!(
            choose(&mut candidates, 500),
            0,
            "the small value must wait behind the big one until the bucket holds 900 bytes"
        );
    }

    #[test]
    fn the_bucket_refills_with_time_up_to_its_burst_and_reliable_traffic_runs_it_into_debt() {
        let rate = Rate::new(60_000, 1146);
        let mut bucket = TokenBucket::default();
        bucket.refill(Duration::ZERO, rate);
        assert_eq!(
            bucket.available(),
            6000,
            "a new peer starts with 100 ms of budget"
        );
        bucket.charge(6000, rate);
        bucket.refill(TICK, rate);
        assert_eq!(bucket.available(), 1000, "one 60 Hz tick earns 1000 bytes");
        bucket.refill(Duration::from_secs(10), rate);
        assert_eq!(bucket.available(), 6000, "saved up to the burst, no more");
        bucket.charge(1_000_000, rate);
        assert_eq!(
            bucket.available(),
            0,
            "a big reliable message leaves nothing"
        );
        bucket.refill(Duration::from_secs(11) + TICK, rate);
        assert!(
            bucket.available() > 0,
            "the debt is at most one second of budget"
        );
        let tiny = Rate::new(100, 1146);
        let mut bucket = TokenBucket::default();
        bucket.refill(Duration::ZERO, tiny);
        assert_eq!(
            bucket.available(),
            1146,
            "even a tiny budget holds one full message, so every value fits eventually"
        );
    }
}
