//! Counts of what the writer and the sync thread have done.

use std::sync::atomic::AtomicU64;

/// What the writer has done, counted as it goes.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) transactions: AtomicU64,
    pub(super) operations: AtomicU64,
    pub(super) transitions: AtomicU64,
    pub(super) written: AtomicU64,
    pub(super) answered_writes: AtomicU64,
    pub(super) log_syncs: AtomicU64,
}

/// A snapshot of the writer's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed or attempted.
    pub transactions: u64,
    /// Operations (publish, receive, settle, commit, load, ...) run in them.
    pub operations: u64,
    /// Workflow transitions among those operations.
    pub transitions: u64,
    /// Transactions that committed changes.
    pub written: u64,
    /// Of those, the ones whose operations were answered: only once they are on disk.
    pub answered_writes: u64,
    /// Fsyncs of the write-ahead log by the sync thread ([`super::Durability::Full`]); each covers
    /// every transaction committed before it started.
    pub log_syncs: u64,
}

impl StoreStats {
    /// What happened between `before` and `self`.
    ///
    /// ```
    /// # use infinitic_runtime::store::sqlite::StoreStats;
    /// let before = StoreStats { transactions: 2, ..StoreStats::default() };
    /// let after = StoreStats { transactions: 5, ..StoreStats::default() };
    /// assert_eq!(after.since(&before).transactions, 3);
    /// ```
    pub fn since(&self, before: &StoreStats) -> StoreStats {
        StoreStats {
            transactions: self.transactions - before.transactions,
            operations: self.operations - before.operations,
            transitions: self.transitions - before.transitions,
            written: self.written - before.written,
            answered_writes: self.answered_writes - before.answered_writes,
            log_syncs: self.log_syncs - before.log_syncs,
        }
    }
}
