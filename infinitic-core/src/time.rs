//! Workflow time: milliseconds since the UNIX epoch, recorded in history so replay sees the
//! same clock as the first execution.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in whole milliseconds since the UNIX epoch.
///
/// ```
/// use infinitic_core::Timestamp;
/// use std::time::Duration;
/// let t = Timestamp::from_millis(1_000);
/// assert_eq!(t + Duration::from_secs(1), Timestamp::from_millis(2_000));
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// A timestamp from milliseconds since the UNIX epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the UNIX epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The wall clock now. Only the runtime calls this, never workflow code.
    pub fn wall_clock() -> Self {
        Self::from(SystemTime::now())
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let millis = t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self(millis)
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        t.to_system_time()
    }
}

impl Timestamp {
    /// The first whole millisecond at or after `t`: a deadline rounded so that waiting until
    /// it never ends before `t`.
    ///
    /// ```
    /// use infinitic_core::Timestamp;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let t = UNIX_EPOCH + Duration::from_micros(1_500);
    /// assert_eq!(Timestamp::at_or_after(t), Timestamp::from_millis(2));
    /// assert_eq!(Timestamp::from(t), Timestamp::from_millis(1)); // plain conversion cuts
    /// ```
    pub fn at_or_after(t: SystemTime) -> Self {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::from_millis(0).plus_at_least(since)
    }

    /// This time plus at least `d`: a sub-millisecond remainder counts as a whole millisecond
    /// (a timer of 999 µs is a timer of 1 ms, not of 0).
    pub fn plus_at_least(self, d: Duration) -> Self {
        let millis = d.as_nanos().div_ceil(1_000_000);
        Timestamp(
            self.0
                .saturating_add(u64::try_from(millis).unwrap_or(u64::MAX)),
        )
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }
}
