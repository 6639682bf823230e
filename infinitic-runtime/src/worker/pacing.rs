//! Pacing what keeps failing: backoff between tries, and logs of repeated problems thinned
//! to one per kind and interval (a full disk fails every operation of every worker loop).

use std::time::Duration;

/// How long to wait after `failures` failures in a row: doubling from `base`, at most
/// [`MAX_BACKOFF`], so a store that stays unavailable is not hammered.
pub(crate) fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.max(Duration::from_millis(1))
        .saturating_mul(factor)
        .min(MAX_BACKOFF)
}

/// The longest wait between two tries of an operation that keeps failing.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often one kind of problem is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs a problem (a `warn` event) unless one of the same `kind` was logged less than
/// [`LOG_INTERVAL`] ago; the next one says how many were held back meanwhile (`held_back`). A
/// full disk fails every operation of every worker loop: one event per kind and interval is
/// enough.
pub(crate) fn warn_throttled(kind: &str, message: impl FnOnce() -> String) {
    use std::sync::{Mutex, OnceLock};
    static LOG: OnceLock<Mutex<Throttle>> = OnceLock::new();
    let admitted = LOG
        .get_or_init(|| Mutex::new(Throttle::new(LOG_INTERVAL)))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .admit(kind, std::time::Instant::now());
    if let Some(held_back) = admitted {
        tracing::warn!(kind, held_back, "{}", message());
    }
}

/// Decides which log events pass: one per kind and interval.
#[derive(Debug)]
struct Throttle {
    interval: Duration,
    /// When each kind was last let through, and how many were held back since.
    last: std::collections::HashMap<String, (std::time::Instant, u64)>,
}

impl Throttle {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: std::collections::HashMap::new(),
        }
    }

    /// `Some(held back since the last one)` if an event of `kind` may be logged at `now`.
    fn admit(&mut self, kind: &str, now: std::time::Instant) -> Option<u64> {
        match self.last.get_mut(kind) {
            Some((at, held)) if now.duration_since(*at) < self.interval => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                self.last.insert(kind.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_kind_of_problem_is_logged_once_per_interval_with_the_count_held_back() {
        let mut throttle = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.admit("disk full", start), Some(0));
        // 80 per second, as a full disk made the workers log before.
        for i in 1..800 {
            let at = start + Duration::from_millis(i * 12);
            assert_eq!(throttle.admit("disk full", at), None);
        }
        assert_eq!(throttle.admit("locked", start), Some(0), "kinds are apart");
        let later = start + Duration::from_secs(10);
        assert_eq!(throttle.admit("disk full", later), Some(799));
        assert_eq!(throttle.admit("disk full", later), None);
    }

    #[test]
    fn backoff_doubles_from_its_base_up_to_the_maximum() {
        let base = Duration::from_millis(50);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 2), base * 2);
        assert_eq!(backoff(base, 4), base * 8);
        assert_eq!(backoff(base, 30), MAX_BACKOFF);
        assert_eq!(backoff(base, u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(base, 0), base);
    }
}
