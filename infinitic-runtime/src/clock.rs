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
