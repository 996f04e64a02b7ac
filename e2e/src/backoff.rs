//! Exponential back-off for container restarts and image resolution retries.
//!
//! Owns only the delay arithmetic (pure, unit-tested); the sleeping is done by the caller so
//! that it can be interrupted by a stop request.

use std::time::Duration;

/// Doubles from `base` up to `cap`. kubelet uses 10s → 300s; the pod runner defaults to
/// 1s → 60s because it serves local development and tests, where fast feedback on a crash
/// loop matters more than protecting a shared node from thrashing.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        let cap = cap.max(base);
        Self { base, cap, next: base }
    }

    /// The delay to wait now; the following call returns twice as much (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.cap);
        delay
    }

    /// Starts over from `base`.
    pub fn reset(&mut self) {
        self.next = self.base;
    }

    /// A container that stayed up for twice the cap is considered healthy again, so its next
    /// crash restarts quickly (kubelet resets after 2 × its 300s cap, the same rule).
    pub fn reset_if_healthy_for(&mut self, ran_for: Duration) {
        if ran_for >= self.cap.saturating_mul(2) {
            self.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn resets_after_a_long_healthy_run_only() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        backoff.next_delay();
        backoff.next_delay();
        backoff.reset_if_healthy_for(Duration::from_secs(30));
        assert_eq!(backoff.next_delay(), Duration::from_secs(4));
        backoff.reset_if_healthy_for(Duration::from_secs(120));
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn a_cap_below_the_base_is_raised_to_the_base() {
        let mut backoff = Backoff::new(Duration::from_secs(3), Duration::from_secs(1));
        assert_eq!(backoff.next_delay(), Duration::from_secs(3));
        assert_eq!(backoff.next_delay(), Duration::from_secs(3));
    }
}
