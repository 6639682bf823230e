//! Retry policies: exponential backoff with jitter, decided as a pure function.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When to retry a failed task attempt.
///
/// ```
/// use infinitic_core::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
/// assert_eq!(policy.delay_after(1, 0.5), Some(Duration::from_secs(1)));
/// assert_eq!(policy.delay_after(3, 0.5), Some(Duration::from_secs(4)));
/// assert_eq!(policy.delay_after(policy.max_attempts, 0.5), None); // give up
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Factor between consecutive delays.
    pub multiplier: f64,
    /// Upper bound of a delay (before jitter).
    pub max_delay: Duration,
    /// Random spread, as a fraction of the delay (0.2 = ±20%), so retries of many tasks that
    /// failed together do not arrive together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s then ×2 up to 60 s, ±20%.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay before the attempt after `attempt` (counted from 1), or `None` to give up.
    /// `unit_random` in `[0, 1)` draws the jitter.
    pub fn delay_after(&self, attempt: u32, unit_random: f64) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let spread = self.jitter.clamp(0.0, 1.0) * (2.0 * unit_random.clamp(0.0, 1.0) - 1.0);
        Some(Duration::from_secs_f64((capped * (1.0 + spread)).max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_stays_within_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            ..RetryPolicy::default()
        };
        for attempt in 1..10 {
            let exact = (2f64.powi(attempt as i32 - 1)).min(60.0);
            for r in [0.0, 0.5, 0.999] {
                let d = policy.delay_after(attempt, r).unwrap().as_secs_f64();
                assert!(
                    d >= exact * 0.8 - 1e-9 && d <= exact * 1.2 + 1e-9,
                    "{attempt} {r} {d}"
                );
            }
        }
        assert_eq!(policy.delay_after(10, 0.5), None);
        assert_eq!(RetryPolicy::never().delay_after(1, 0.5), None);
    }
}
