//! Polling intervals: the first retry comes after [`INITIAL_INTERVAL`], each later one
//! [`GROWTH`] times longer, up to `--max-interval`; each interval is jittered by ±20% so many
//! Pods waiting for the same Service do not probe it in lockstep.
//!
//! With a growth of 1.1 the pause before the next attempt stays near a tenth of the time already
//! waited, so a dependency that comes up after 2s is noticed within about 0.2s, one that comes up
//! after a minute within `--max-interval`; meanwhile a target sees a few attempts a second at
//! most, and at most one per `--max-interval` after the first ten seconds.

use std::time::Duration;

use rand::Rng;

pub const INITIAL_INTERVAL: Duration = Duration::from_millis(50);
/// Growth per attempt: the interval reaches 1s after about 31 attempts, 10s into the wait.
pub const GROWTH: f64 = 1.1;
const JITTER: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: INITIAL_INTERVAL.min(max),
            max,
        }
    }

    /// The interval to sleep before the next attempt.
    pub fn next_interval(&mut self) -> Duration {
        let base = self.next;
        self.next = base.mul_f64(GROWTH).min(self.max);
        let factor = rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER));
        base.mul_f64(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_grow_with_jitter_and_stop_at_the_maximum() {
        let max = Duration::from_secs(1);
        let mut b = Backoff::new(max);
        let first = b.next_interval();
        assert!(
            first >= Duration::from_millis(40) && first <= Duration::from_millis(60),
            "{first:?}"
        );
        let mut last = first;
        for _ in 0..60 {
            last = b.next_interval();
            assert!(last <= max);
        }
        assert!(last >= Duration::from_millis(800), "{last:?}");
    }

    #[test]
    fn a_small_maximum_caps_even_the_first_interval() {
        let mut b = Backoff::new(Duration::from_millis(10));
        assert!(b.next_interval() <= Duration::from_millis(10));
    }
}
