//! Time as the runtime reads it: when a message becomes visible, when a step ended, when a
//! timer is due. Injected, so tests can run on a virtual clock. Workflow code never reads it:
//! it sees the times recorded in its history (`workflow::now()`).

use infinitic_core::Timestamp;

/// A source of the current time.
///
/// ```
/// use infinitic_runtime::clock::{Clock, WallClock};
/// let now = WallClock.now();
/// assert!(now.as_millis() > 0);
/// ```
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The machine's wall clock: the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        Timestamp::wall_clock()
    }
}

/// The machine's wall clock corrected by an offset to a reference clock (a database's, say),
/// so that processes on several hosts agree on what time it is: whether a timer is due does
/// not depend on which host reads the clock. Clones share one offset, which its owner
/// measures and updates ([`OffsetClock::set_offset_ms`]).
///
/// ```
/// use infinitic_runtime::clock::{Clock, OffsetClock, WallClock};
/// let clock = OffsetClock::default();
/// clock.set_offset_ms(60_000); // the reference runs a minute ahead of this machine
/// assert!(clock.now().as_millis() >= WallClock.now().as_millis() + 59_000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct OffsetClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl OffsetClock {
    /// Sets how far ahead of this machine's wall clock the reference is, in milliseconds
    /// (negative: behind).
    pub fn set_offset_ms(&self, offset: i64) {
        self.0.store(offset, std::sync::atomic::Ordering::Relaxed);
    }

    /// How far ahead of this machine's wall clock the reference is, in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        let wall = i64::try_from(Timestamp::wall_clock().as_millis()).unwrap_or(i64::MAX);
        let now = wall.saturating_add(self.offset_ms()).max(0);
        Timestamp::from_millis(u64::try_from(now).unwrap_or(0))
    }
}

/// A clock that moves only when told: what the [`WorkflowTester`](crate::tester::WorkflowTester)
/// runs workers on, so a year of timers passes in milliseconds. Clones share one time.
///
/// ```
/// use infinitic_core::Timestamp;
/// use infinitic_runtime::clock::{Clock, VirtualClock};
/// let clock = VirtualClock::starting_at(Timestamp::from_millis(1_000));
/// clock.advance_to(Timestamp::from_millis(5_000));
/// clock.advance_to(Timestamp::from_millis(2_000)); // never backwards
/// assert_eq!(clock.now(), Timestamp::from_millis(5_000));
/// ```
#[derive(Clone, Debug)]
pub struct VirtualClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl VirtualClock {
    /// A clock that reads `start` until it is advanced.
    pub fn starting_at(start: Timestamp) -> Self {
        Self(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            start.as_millis(),
        )))
    }

    /// Moves the clock forward to `at`; an earlier `at` leaves it where it is.
    pub fn advance_to(&self, at: Timestamp) {
        self.0
            .fetch_max(at.as_millis(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}
