//! Token buckets: how the lobby lets short bursts through (a peer joining a full room sends
//! dozens of signals at once) while holding the average down.
//!
//! Time is an input (`now`), so the arithmetic is tested without waiting.

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
}
