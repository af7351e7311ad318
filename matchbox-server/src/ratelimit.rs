//! Token buckets: how the lobby lets short bursts through (a peer joining a full room sends
//! dozens of signals at once) while holding the average down.
//!
//! Time is an input (`now`), so the arithmetic is tested without waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use tokio::time::Instant;

/// A bucket of `capacity` tokens refilled at `rate` per second; each event takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`: a newcomer may burst at once.
    pub fn full(capacity: u32, rate_per_sec: f64, now: Instant) -> Self {
        Self {
            tokens: f64::from(capacity),
            capacity: f64::from(capacity),
            rate: rate_per_sec.max(0.0),
            last: now,
        }
    }

    /// Whether a token could be taken at `now`, without taking it.
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Whether it has refilled to capacity by `now`: then it is no different from a new one
    /// and can be forgotten.
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
    }

    /// Takes a token if there is one; `false` means the event is over the limit.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One bucket per key (an address, a room), created full on first use and forgotten once full
/// again, so memory follows the keys active within one refill period, not all keys ever seen.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    capacity: u32,
    rate: f64,
    buckets: HashMap<K, TokenBucket>,
    /// The map's size after the last sweep: the next sweep comes when it has doubled.
    swept_at: usize,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    /// Buckets of `capacity` refilled at `rate` per second; `capacity` 0 turns the limit off.
    pub fn new(capacity: u32, rate: f64) -> Self {
        Self {
            capacity,
            rate,
            buckets: HashMap::new(),
            swept_at: 0,
        }
    }

    /// Whether the limit is on.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Whether `key` may have an event at `now`, without taking it.
    pub fn ready(&mut self, key: &K, now: Instant) -> bool {
        !self.enabled()
            || self
                .buckets
                .get_mut(key)
                .is_none_or(|bucket| bucket.ready(now))
    }

    /// Takes a token for `key`; `false` means it is over the limit.
    pub fn take(&mut self, key: &K, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        self.sweep(now);
        let (capacity, rate) = (self.capacity, self.rate);
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::full(capacity, rate, now))
            .take(now)
    }

    fn sweep(&mut self, now: Instant) {
        if self.buckets.len() < (2 * self.swept_at).max(1024) {
            return;
        }
        self.buckets.retain(|_, bucket| !bucket.is_full(now));
        self.swept_at = self.buckets.len();
    }

    /// Keys with a bucket (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// How often new players may join: per source address (a script rejoining in a loop makes every
/// member of its room offer to each new id) and per full-mesh room (churn there costs every
/// member a handshake). Matchmaking (`?next=`) queues are not limited per room: nobody is told
/// of a player in a group still filling.
#[derive(Debug)]
pub struct JoinLimits {
    /// Per source address.
    pub per_address: KeyedBuckets<IpAddr>,
    /// Per full-mesh room name.
    pub per_room: KeyedBuckets<String>,
}

impl JoinLimits {
    /// From the lobby's settings.
    pub fn new(config: &crate::LobbyConfig) -> Self {
        Self {
            per_address: KeyedBuckets::new(config.join_burst_per_ip, config.join_rate_per_ip),
            per_room: KeyedBuckets::new(config.join_burst_per_room, config.join_rate_per_room),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(3, 2.0, start);
        assert!((0..3).all(|_| bucket.take(start)), "the burst");
        assert!(!bucket.take(start), "empty");
        assert!(
            !bucket.take(start + Duration::from_millis(400)),
            "0.8 token"
        );
        assert!(bucket.take(start + Duration::from_millis(500)), "one token");
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.take(later)), "refilled to capacity");
        assert!(!bucket.take(later), "and no further");
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::full(1, 1.0, start);
        assert!(bucket.take(start));
        assert!(!bucket.take(start - Duration::from_secs(5)));
        assert!(!bucket.take(start + Duration::from_millis(500)));
        assert!(bucket.take(start + Duration::from_secs(1)));
    }

    #[test]
    fn keyed_buckets_limit_each_key_and_forget_idle_ones() {
        let start = Instant::now();
        let mut limits = KeyedBuckets::new(2, 1.0);
        assert!(limits.take(&"a", start) && limits.take(&"a", start));
        assert!(!limits.ready(&"a", start));
        assert!(!limits.take(&"a", start), "a is over its burst");
        assert!(limits.take(&"b", start), "b has its own bucket");
        assert!(limits.ready(&"c", start), "an unseen key is ready");
        let mut many = KeyedBuckets::new(2, 1.0);
        for n in 0..2000u32 {
            // One new key a second: each bucket is full again a second after its one event.
            assert!(many.take(&n, start + Duration::from_secs(u64::from(n))));
        }
        assert!(many.len() < 1100, "full buckets were swept: {}", many.len());
        let off = &mut KeyedBuckets::new(0, 0.0);
        assert!(
            (0..100).all(|_| off.take(&"a", start)),
            "capacity 0 is no limit"
        );
        assert!(off.is_empty());
    }
}
