//! The embedded store: one SQLite file in WAL mode, written by one thread that groups every
//! operation waiting at the time into one transaction (group commit). Each caller is answered
//! only after the transaction holding its operation is on disk.
//!
//! With [`Durability::Full`] (the default) a second thread makes commits durable: SQLite
//! commits without syncing (`synchronous=NORMAL`), then the sync thread fsyncs the write-ahead
//! log and only then answers the operations of that transaction and of every one before it.
//! One fsync covers all transactions committed since the previous one, and the writer runs the
//! next transaction meanwhile instead of waiting for the disk. SQLite syncs the log itself
//! before each checkpoint and the database after it, so a log that held a synced commit
//! always keeps it. With [`Durability::FullBeforeVisible`], SQLite syncs inside each commit
//! (`synchronous=FULL`).
//!
//! Several processes may open the same file; SQLite serializes their writers, and
//! compare-and-set on workflow versions keeps their transitions consistent.
//!
//! Faults: a batch either commits whole or leaves nothing visible. An error of the
//! environment (disk full, I/O, a lock held too long by another process) fails the whole
//! batch with [`StoreError::Unavailable`]; an error of one operation fails that operation
//! only, and the rest of the batch runs again without it. After a write fails for lack of
//! space, the writer checkpoints the log into the database and truncates it as soon as it
//! can, so freeing some space is enough to carry on. A failed fsync breaks the handle: every
//! later operation fails with [`StoreError::Broken`] until the store is opened again.

mod queue;
mod schema;
mod stats;
mod syncer;
mod workflows;
mod writer;

pub use stats::StoreStats;

use super::{
    Activity, BoxFuture, CommitOutcome, DeadLetter, DeliveryId, Finished, LocalHandoff, Outgoing,
    Pending, Received, Settlement, StateStore, StoreError, StoredWorkflow, Transition, Transport,
};
use crate::clock::{Clock, WallClock};
use infinitic_core::{Timestamp, WorkflowId};
use rusqlite::{Connection, ErrorCode};
use schema::open_connection;
use stats::Counters;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;
use syncer::{Syncer, WalLog};
use tokio::sync::{broadcast, oneshot, watch};
use workflows::Encoded;
use writer::{Effects, Op, Reply, Writer};

/// How to open the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file if it does not exist (workers).
    CreateIfMissing,
    /// Fail with [`StoreError::Missing`] if it does not exist (clients).
    MustExist,
}

/// How much durability a store gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every operation is answered only after its commit is on disk (fsync), so nothing
    /// acknowledged is lost, even on power loss. The default.
    ///
    /// The fsync of one transaction runs while the next one executes. Meanwhile another
    /// process sharing the file may already read the commit being synced: on power loss in
    /// that window (about a millisecond) it has seen a step that is then done again, with the
    /// same task id.
    #[default]
    Full,
    /// As [`Durability::Full`], and no process can read a commit before it is on disk
    /// (SQLite's `synchronous=FULL`: the fsync is part of the commit). Fsyncs and transactions
    /// take turns, so throughput is lower.
    FullBeforeVisible,
    /// Nothing on disk: for tests and for measuring the cost of durability.
    InMemory,
}

/// How the embedded store is opened, beyond its path.
///
/// ```
/// use infinitic_runtime::store::sqlite::{Durability, StoreOptions};
/// use std::time::Duration;
/// let options = StoreOptions {
///     busy_timeout: Duration::from_secs(5),
///     ..StoreOptions::default()
/// };
/// assert_eq!(options.durability, Durability::Full);
/// ```
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How much durability the store gives.
    pub durability: Durability,
    /// How long an operation waits for a lock held by another process before it fails with
    /// [`StoreError::Unavailable`] (and is retried by workers).
    pub busy_timeout: Duration,
    /// What "now" is when the store decides which messages are visible and stamps rows.
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(30),
            clock: Arc::new(WallClock),
        }
    }
}

/// The embedded store. Cheap to clone; all clones share one writer thread.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stats: Arc<Counters>,
    ops: mpsc::Sender<Op>,
    commits: watch::Receiver<u64>,
    finished: broadcast::Sender<WorkflowId>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` with full durability.
    pub fn open(path: impl AsRef<Path>, mode: OpenMode) -> Result<Self, StoreError> {
        Self::open_with(path, mode, Durability::Full)
    }

    /// A non-durable store in memory (tests, and measuring the cost of durability).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::open_with(":memory:", OpenMode::CreateIfMissing, Durability::InMemory)
    }

    /// Opens with an explicit durability.
    pub fn open_with(
        path: impl AsRef<Path>,
        mode: OpenMode,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        let options = StoreOptions {
            durability,
            ..StoreOptions::default()
        };
        Self::open_with_options(path, mode, options)
    }

    /// Opens with explicit [`StoreOptions`] (durability, busy timeout, clock).
    ///
    /// ```no_run
    /// use infinitic_runtime::store::sqlite::{OpenMode, SqliteStore, StoreOptions};
    /// use std::time::Duration;
    /// let options = StoreOptions { busy_timeout: Duration::from_secs(2), ..Default::default() };
    /// let store = SqliteStore::open_with_options("app.db", OpenMode::CreateIfMissing, options)?;
    /// # Ok::<(), infinitic_runtime::store::StoreError>(())
    /// ```
    pub fn open_with_options(
        path: impl AsRef<Path>,
        mode: OpenMode,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let durability = options.durability;
        let path = path.as_ref().to_path_buf();
        let connection = open_connection(&path, mode, &options)?;
        // The log SQLite itself writes: its own resolved path (symlinks and the working
        // directory at open time), opened once and kept for the store's lifetime.
        let wal = match durability {
            Durability::Full => Some(WalLog::open(&connection, &path)?),
            _ => None,
        };
        let (ops, queue) = mpsc::channel();
        let (notify, commits) = watch::channel(0u64);
        let (finished, _) = broadcast::channel(4096);
        let stats = Arc::new(Counters::default());
        let broken = Arc::new(OnceLock::new());
        let (synced, committed) = mpsc::channel();
        let syncer = Syncer {
            stats: Arc::clone(&stats),
            wal,
            broken: Arc::clone(&broken),
            notify,
            finished: finished.clone(),
        };
        let writer = Writer {
            stats: Arc::clone(&stats),
            connection,
            effects: Effects::default(),
            synced,
            broken,
            starved: None,
            checkpoint_failed: None,
            clock: Arc::clone(&options.clock),
        };
        let thread = |name: &str| std::thread::Builder::new().name(name.into());
        thread("infinitic-store-sync")
            .spawn(move || syncer.run(committed))
            .map_err(|e| StoreError::Database(format!("cannot start the sync thread: {e}")))?;
        thread("infinitic-store-writer")
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                stats,
                ops,
                commits,
                finished,
                path,
            }),
        })
    }

    /// Counts of what the writer has done so far (how well group commit groups).
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            transactions: self.inner.stats.transactions.load(Ordering::Relaxed),
            operations: self.inner.stats.operations.load(Ordering::Relaxed),
            transitions: self.inner.stats.transitions.load(Ordering::Relaxed),
            written: self.inner.stats.written.load(Ordering::Relaxed),
            answered_writes: self.inner.stats.answered_writes.load(Ordering::Relaxed),
            log_syncs: self.inner.stats.log_syncs.load(Ordering::Relaxed),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Submits an operation now; its answer comes later.
    fn submit<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Pending<T> {
        let (reply, answer) = oneshot::channel();
        // If the writer is gone, `reply` is dropped with the op and the answer is `Closed`.
        let _ = self.inner.ops.send(op(reply));
        Pending::new(answer)
    }

    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops
            .send(op(reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl Transport for SqliteStore {
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), StoreError> {
        self.call(|r| Op::Publish(messages, r)).await
    }

    async fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Received, StoreError> {
        let topics = topics.to_vec();
        self.call(|r| Op::Receive(topics, max, lease, r)).await
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), StoreError> {
        if settlements.is_empty() {
            return Ok(());
        }
        self.call(|r| Op::Settle(settlements, r)).await
    }

    fn activity(&self) -> Activity {
        Activity::new(self.inner.commits.clone())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.call(|r| Op::DeadLetters(limit, r)).await
    }

    fn local_handoff(&self) -> Option<&dyn LocalHandoff> {
        Some(self)
    }
}

impl LocalHandoff for SqliteStore {
    fn reserve_ids(&self, count: u32) -> BoxFuture<'_, Result<Range<u64>, StoreError>> {
        Box::pin(self.call(move |r| Op::ReserveIds(count, r)))
    }
}

impl StateStore for SqliteStore {
    async fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        let id = id.clone();
        self.call(|r| Op::Load(id, with_history, r)).await
    }

    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>> {
        // Encoded here, on the caller's thread: the writer thread is the bottleneck.
        match transitions.into_iter().map(Encoded::new).collect() {
            Ok(encoded) => self.submit(|r| Op::Commit(encoded, r)),
            Err(error) => {
                let (reply, answer) = oneshot::channel();
                let _ = reply.send(Err(error));
                Pending::new(answer)
            }
        }
    }

    fn finished(&self) -> Finished {
        Finished::new(self.inner.finished.subscribe())
    }

    fn settles_on_commit(&self) -> bool {
        true
    }
}

/// A delivery of the embedded queue is its row.
impl rusqlite::ToSql for DeliveryId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        // Rows are numbered from 1 up by SQLite: every handle it gave fits.
        Ok(i64::try_from(self.get()).unwrap_or(i64::MAX).into())
    }
}

/// The delivery handle of queue row `row`.
fn delivery_of(row: i64) -> DeliveryId {
    DeliveryId::new(u64::try_from(row).unwrap_or(0))
}

/// An SQLite error as a store error: failures of the environment are transient.
fn db(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory
            | ErrorCode::CannotOpen
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::ReadOnly,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Database(e.to_string()),
    }
}

/// A column type as SQL names it.
fn sql_type(t: rusqlite::types::Type) -> &'static str {
    use rusqlite::types::Type;
    match t {
        Type::Null => "NULL",
        Type::Integer => "INTEGER",
        Type::Real => "REAL",
        Type::Text => "TEXT",
        Type::Blob => "BLOB",
    }
}

/// Milliseconds as `i64` for SQLite.
pub(crate) fn millis(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// Runs a parameterless statement through the statement cache (transaction control runs many
/// times per batch: parsing it each time showed in profiles).
fn run(c: &Connection, sql: &str) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute([])
}
