//! Reconnect delays: exponential with "equal jitter" (half fixed, half random), capped.
//!
//! Pure: the caller passes the random number and decides when a session counts as healthy, so
//! tests can check the schedule exactly.

use std::time::Duration;

/// How ktx spaces its reconnect attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay after the first failure (before jitter).
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// A session that stayed up at least this long resets the schedule; a shadow that accepts
    /// and drops at once keeps backing off instead of being hammered.
    pub healthy_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            healthy_after: Duration::from_secs(5),
        }
    }
}

/// The state of a reconnect schedule.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait before the next attempt:
    /// `d/2 + random % (d/2 + 1)` with `d = min(initial * 2^failures, max)`.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let shift = self.failures.min(20);
        let d = self
            .policy
            .initial
            .saturating_mul(1u32 << shift)
            .min(self.policy.max);
        self.failures = self.failures.saturating_add(1);
        let half = d / 2;
        let half_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(random % half_ns.saturating_add(1))
    }

    /// Records the end of a session that was up for `lasted`.
    pub fn session_ended(&mut self, lasted: Duration) {
        if lasted >= self.policy.healthy_after {
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: ms(100),
            max: ms(1000),
            healthy_after: ms(5000),
        });
        // random = 0 gives the fixed half of each delay.
        let lows: Vec<_> = (0..6).map(|_| b.next_delay(0)).collect();
        assert_eq!(lows, [ms(50), ms(100), ms(200), ms(400), ms(500), ms(500)]);
        // random = max gives the full delay, never more.
        assert!(b.next_delay(u64::MAX) <= ms(1000));
        assert_eq!(b.failures(), 7);
    }

    #[test]
    fn a_healthy_session_resets_the_schedule_a_flapping_one_does_not() {
        let mut b = Backoff::new(BackoffPolicy::default());
        b.next_delay(0);
        b.next_delay(0);
        b.session_ended(ms(10));
        assert_eq!(b.failures(), 2);
        b.session_ended(Duration::from_secs(6));
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay(0), ms(50));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(BackoffPolicy::default());
        for _ in 0..100 {
            assert!(b.next_delay(12345) <= Duration::from_secs(10));
        }
    }
}
