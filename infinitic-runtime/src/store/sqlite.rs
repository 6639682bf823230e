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

use super::{
    millis, now, Activity, CommitOutcome, DeadLetter, Delivery, DeliveryId, Durability, Finished,
    Outgoing, Pending, Received, Settlement, StateStore, StoreError, StoreOptions, StoredWorkflow,
    Transition, Transport, WorkflowHeader, WorkflowState,
};
use infinitic_core::{decode, encode, HistoryEvent, Timestamp, WorkflowId};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot, watch};

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

/// Most operations grouped into one transaction.
const MAX_BATCH: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    visible_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_by_topic ON queue (topic, visible_at, id);
CREATE TABLE IF NOT EXISTS workflows (
    id          TEXT    PRIMARY KEY,
    workflow    TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    input       BLOB    NOT NULL,
    started_at  INTEGER NOT NULL,
    parent      BLOB,
    state       BLOB    NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    workflow_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL, -- the version the transition started from: one row each
    events      BLOB    NOT NULL, -- the events one transition appended, encoded together
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    reason      TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
";

/// How to open the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file if it does not exist (workers).
    CreateIfMissing,
    /// Fail with [`StoreError::Missing`] if it does not exist (clients).
    MustExist,
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

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Publish(Vec<Outgoing>, Reply<()>),
    Receive(Vec<String>, usize, Duration, Reply<Received>),
    Settle(Vec<Settlement>, Reply<()>),
    Commit(Vec<Encoded>, Reply<Vec<CommitOutcome>>),
    ReserveIds(u32, Reply<std::ops::Range<DeliveryId>>),
    Load(WorkflowId, bool, Reply<Option<StoredWorkflow>>),
    DeadLetters(usize, Reply<Vec<DeadLetter>>),
}

impl Op {
    fn writes(&self) -> bool {
        !matches!(self, Op::Load(..) | Op::DeadLetters(..))
    }

    /// Pairs the operation's reply with what it produced; its transitions go to `spent`.
    fn answer(self, result: Result<Output, StoreError>, spent: &mut Vec<Vec<Encoded>>) -> Answer {
        // An output of another operation's kind cannot happen: `Writer::execute` makes each
        // from its own operation.
        let mismatch = || StoreError::Database("internal error: mismatched answer".into());
        match self {
            Op::Publish(_, tx) | Op::Settle(_, tx) => Answer::Unit(
                tx,
                result.and_then(|o| match o {
                    Output::Unit => Ok(()),
                    _ => Err(mismatch()),
                }),
            ),
            Op::Receive(.., tx) => Answer::Received(
                tx,
                result.and_then(|o| match o {
                    Output::Received(r) => Ok(r),
                    _ => Err(mismatch()),
                }),
            ),
            Op::Commit(transitions, tx) => {
                spent.push(transitions);
                Answer::Committed(
                    tx,
                    result.and_then(|o| match o {
                        Output::Committed(c) => Ok(c),
                        _ => Err(mismatch()),
                    }),
                )
            }
            Op::ReserveIds(_, tx) => Answer::Ids(
                tx,
                result.and_then(|o| match o {
                    Output::Ids(ids) => Ok(ids),
                    _ => Err(mismatch()),
                }),
            ),
            Op::Load(.., tx) => Answer::Loaded(
                tx,
                result.and_then(|o| match o {
                    Output::Loaded(w) => Ok(w),
                    _ => Err(mismatch()),
                }),
            ),
            Op::DeadLetters(_, tx) => Answer::Dead(
                tx,
                result.and_then(|o| match o {
                    Output::Dead(d) => Ok(d),
                    _ => Err(mismatch()),
                }),
            ),
        }
    }
}

/// What one operation produced.
enum Output {
    Unit,
    Received(Received),
    Committed(Vec<CommitOutcome>),
    Ids(std::ops::Range<DeliveryId>),
    Loaded(Option<StoredWorkflow>),
    Dead(Vec<DeadLetter>),
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

    /// Opens with explicit [`StoreOptions`] (durability, busy timeout).
    ///
    /// ```no_run
    /// use infinitic_runtime::store::sqlite::{OpenMode, SqliteStore};
    /// use infinitic_runtime::store::StoreOptions;
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
        let connection = open_connection(&path, mode, options)?;
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

/// SQLite's write-ahead log, kept open to fsync it: always the file SQLite writes, wherever
/// the path given at open time points later.
#[derive(Debug)]
struct WalLog {
    file: std::fs::File,
    path: PathBuf,
}

impl WalLog {
    fn open(connection: &Connection, given: &Path) -> Result<Self, StoreError> {
        let resolved = connection
            .path()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| given.to_path_buf());
        let mut path = resolved.into_os_string();
        path.push("-wal");
        let path = PathBuf::from(path);
        // The log exists while a connection is open in WAL mode: the writer's stays open.
        let file = std::fs::File::open(&path).map_err(|e| StoreError::Corrupt {
            path: given.display().to_string(),
            reason: format!("cannot open its write-ahead log {}: {e}", path.display()),
        })?;
        Ok(Self { file, path })
    }

    /// Fsyncs the log. A log removed under the store is an error too: what SQLite wrote
    /// there is gone when its connection closes.
    fn sync(&self) -> Result<(), String> {
        let failed = |e: std::io::Error| {
            format!(
                "cannot fsync {}: {e}; the last commits may not be on disk",
                self.path.display()
            )
        };
        self.file.sync_data().map_err(failed)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if self.file.metadata().map_err(failed)?.nlink() == 0 {
                return Err(format!(
                    "the write-ahead log {} was deleted under the store; the last commits are \
                     not on disk",
                    self.path.display()
                ));
            }
        }
        Ok(())
    }
}

fn open_connection(
    path: &Path,
    mode: OpenMode,
    options: StoreOptions,
) -> Result<Connection, StoreError> {
    let durability = options.durability;
    let shown = path.display().to_string();
    let corrupt = |e: rusqlite::Error| StoreError::Corrupt {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let connection = match durability {
        Durability::InMemory => Connection::open_in_memory().map_err(db)?,
        Durability::Full | Durability::FullBeforeVisible => {
            if mode == OpenMode::MustExist && !path.exists() {
                return Err(StoreError::Missing { path: shown });
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            Connection::open_with_flags(path, flags).map_err(corrupt)?
        }
    };
    connection.busy_timeout(options.busy_timeout).map_err(db)?;
    // Every statement the writer runs stays prepared.
    connection.set_prepared_statement_cache_capacity(64);
    if durability != Durability::InMemory {
        // WAL: readers do not block the writer.
        let journal: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(corrupt)?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                path: shown,
                reason: format!("cannot enable WAL (journal mode is {journal})"),
            });
        }
        // FULL: SQLite fsyncs the log in every commit. NORMAL: it does not, and the sync
        // thread does before anything is answered (see the module documentation); NORMAL
        // alone would lose acknowledged commits on power loss.
        let synchronous = if durability == Durability::Full {
            "PRAGMA synchronous = NORMAL;"
        } else {
            "PRAGMA synchronous = FULL;"
        };
        connection.execute_batch(synchronous).map_err(corrupt)?;
    }
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(corrupt)?;
    match version {
        0 => {
            let tables: i64 = connection
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(corrupt)?;
            if tables > 0 {
                return Err(StoreError::Corrupt {
                    path: shown,
                    reason: "it is an SQLite database of another application".into(),
                });
            }
            connection
                .execute_batch(&format!(
                    "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(corrupt)?;
        }
        SCHEMA_VERSION => {}
        found => {
            return Err(StoreError::SchemaVersion {
                path: shown,
                found,
                expected: SCHEMA_VERSION,
            })
        }
    }
    Ok(connection)
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

    async fn reserve_ids(&self, count: u32) -> Result<std::ops::Range<DeliveryId>, StoreError> {
        self.call(|r| Op::ReserveIds(count, r)).await
    }

    fn activity(&self) -> Activity {
        Activity::new(self.inner.commits.clone())
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

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.call(|r| Op::DeadLetters(limit, r)).await
    }
}

/// The single writer: owns the connection, runs batches of operations in transactions.
struct Writer {
    stats: Arc<Counters>,
    connection: Connection,
    effects: Effects,
    /// Where each batch goes once committed, to be made durable and answered.
    synced: mpsc::Sender<Committed>,
    /// Set by the sync thread when an fsync failed: nothing runs any more.
    broken: Arc<OnceLock<String>>,
    /// When a batch last failed for a reason of the environment (disk full, above all): the
    /// log is kept short until [`CALM`] has passed without another.
    starved: Option<Instant>,
    /// When a checkpoint last failed: tried again after [`CHECKPOINT_RETRY`].
    checkpoint_failed: Option<Instant>,
}

/// How long the log is kept short after a failure of the environment.
const CALM: Duration = Duration::from_secs(30);

/// How often a checkpoint is tried at most while it fails.
const CHECKPOINT_RETRY: Duration = Duration::from_millis(100);

/// A batch the writer has finished: its answers and what others should hear about, sent once
/// it is on disk.
struct Committed {
    answers: Vec<Answer>,
    /// The whole batch failed (rolled back): every answer is this error.
    failure: Option<StoreError>,
    /// It committed changes, which must be synced before anything is answered.
    wrote: bool,
    /// Messages were published for any consumer.
    published: bool,
    /// Instances that reached a final state.
    finished: Vec<WorkflowId>,
    /// The batch's transitions, freed by the sync thread rather than the busy writer.
    spent: Vec<Vec<Encoded>>,
}

/// Makes committed batches durable and answers them, in commit order.
struct Syncer {
    stats: Arc<Counters>,
    /// The write-ahead log to fsync; `None` when SQLite syncs inside the commit, or nothing is
    /// on disk.
    wal: Option<WalLog>,
    /// Why an fsync failed, once one has: from then on nothing is answered as done.
    broken: Arc<OnceLock<String>>,
    notify: watch::Sender<u64>,
    finished: broadcast::Sender<WorkflowId>,
}

impl Syncer {
    fn run(self, committed: mpsc::Receiver<Committed>) {
        while let Ok(first) = committed.recv() {
            let mut group = vec![first];
            group.extend(committed.try_iter());
            // One fsync covers every commit that returned before it started.
            if let Some(wal) = &self.wal {
                if self.broken.get().is_none() && group.iter().any(|c| c.wrote) {
                    if let Err(reason) = wal.sync() {
                        let _ = self.broken.set(reason);
                    }
                    self.stats.log_syncs.fetch_add(1, Ordering::Relaxed);
                }
            }
            for batch in group {
                // After a failed fsync, a commit is visible but maybe not durable (and a later
                // fsync may succeed without covering it): its outcome is unknown.
                let failure = batch.failure.or_else(|| {
                    self.broken.get().map(|reason| match batch.wrote {
                        true => StoreError::OutcomeUnknown(reason.clone()),
                        false => StoreError::Broken(reason.clone()),
                    })
                });
                if batch.wrote && failure.is_none() {
                    self.stats.answered_writes.fetch_add(1, Ordering::Relaxed);
                }
                for answer in batch.answers {
                    answer.send(failure.as_ref());
                }
                if failure.is_none() {
                    if batch.published {
                        self.notify.send_modify(|n| *n += 1);
                    }
                    for id in batch.finished {
                        let _ = self.finished.send(id);
                    }
                }
                drop(batch.spent);
            }
        }
    }
}

/// What the writer has done, counted as it goes.
#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    operations: AtomicU64,
    transitions: AtomicU64,
    written: AtomicU64,
    answered_writes: AtomicU64,
    log_syncs: AtomicU64,
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
    /// Fsyncs of the write-ahead log by the sync thread ([`Durability::Full`]); each covers
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

/// What a batch did that others should hear about once it has committed.
#[derive(Default)]
struct Effects {
    /// Messages were published for any consumer (not only for their sender).
    published: Cell<bool>,
    /// Instances that reached a final state.
    finished: RefCell<Vec<WorkflowId>>,
}

/// An operation's answer, sent only after its transaction committed.
enum Answer {
    Unit(Reply<()>, Result<(), StoreError>),
    Received(Reply<Received>, Result<Received, StoreError>),
    Committed(
        Reply<Vec<CommitOutcome>>,
        Result<Vec<CommitOutcome>, StoreError>,
    ),
    Loaded(
        Reply<Option<StoredWorkflow>>,
        Result<Option<StoredWorkflow>, StoreError>,
    ),
    Dead(Reply<Vec<DeadLetter>>, Result<Vec<DeadLetter>, StoreError>),
    Ids(
        Reply<std::ops::Range<DeliveryId>>,
        Result<std::ops::Range<DeliveryId>, StoreError>,
    ),
}

impl Answer {
    fn send(self, failure: Option<&StoreError>) {
        macro_rules! reply {
            ($tx:expr, $result:expr) => {{
                let result = match failure {
                    Some(e) => Err(e.clone()),
                    None => $result,
                };
                let _ = $tx.send(result);
            }};
        }
        match self {
            Answer::Unit(tx, r) => reply!(tx, r),
            Answer::Received(tx, r) => reply!(tx, r),
            Answer::Committed(tx, r) => reply!(tx, r),
            Answer::Loaded(tx, r) => reply!(tx, r),
            Answer::Dead(tx, r) => reply!(tx, r),
            Answer::Ids(tx, r) => reply!(tx, r),
        }
    }
}

/// How one attempt at running a batch ended.
enum Attempt {
    /// The transaction committed; one result per operation (`None`: excluded earlier).
    Committed(Vec<Option<Result<Output, StoreError>>>),
    /// One operation that writes failed on its own: everything was rolled back, and the batch
    /// runs again without it.
    OperationFailed(usize, StoreError),
    /// The whole batch failed and nothing of it is visible.
    Failed(StoreError),
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Op>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let committed = self.execute_batch(batch);
            // The sync thread is gone only if the store is being dropped: nobody waits then.
            let _ = self.synced.send(committed);
        }
    }

    fn execute_batch(&mut self, batch: Vec<Op>) -> Committed {
        if let Some(reason) = self.broken.get() {
            return Committed::failed(batch, StoreError::Broken(reason.clone()));
        }
        self.relieve_log();
        let mut excluded: BTreeMap<usize, StoreError> = BTreeMap::new();
        loop {
            match self.attempt(&batch, &excluded) {
                Attempt::OperationFailed(index, error) => {
                    excluded.insert(index, error);
                }
                Attempt::Failed(error) => {
                    if error.is_transient() {
                        self.keep_log_short();
                    }
                    return Committed::failed(batch, error);
                }
                Attempt::Committed(results) => {
                    let wrote = batch
                        .iter()
                        .enumerate()
                        .any(|(i, op)| op.writes() && !excluded.contains_key(&i));
                    if wrote {
                        self.stats.written.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut spent = Vec::new();
                    let answers = batch
                        .into_iter()
                        .zip(results)
                        .enumerate()
                        .map(|(i, (op, result))| {
                            let result = match result {
                                Some(result) => result,
                                None => Err(excluded.remove(&i).unwrap_or(StoreError::Closed)),
                            };
                            op.answer(result, &mut spent)
                        })
                        .collect();
                    return Committed {
                        answers,
                        failure: None,
                        wrote,
                        published: self.effects.published.get(),
                        finished: self.effects.finished.take(),
                        spent,
                    };
                }
            }
        }
    }

    /// Runs the batch, minus `excluded`, in one transaction.
    fn attempt(&mut self, batch: &[Op], excluded: &BTreeMap<usize, StoreError>) -> Attempt {
        let included = |i: &usize| !excluded.contains_key(i);
        let writes = batch
            .iter()
            .enumerate()
            .any(|(i, op)| included(&i) && op.writes());
        let begin = if writes { "BEGIN IMMEDIATE" } else { "BEGIN" };
        if let Err(e) = run(&self.connection, begin) {
            return Attempt::Failed(db(e));
        }
        self.effects.published.set(false);
        self.effects.finished.borrow_mut().clear();
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        self.stats
            .operations
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let transitions: usize = batch
            .iter()
            .map(|op| match op {
                Op::Commit(t, _) => t.len(),
                _ => 0,
            })
            .sum();
        self.stats
            .transitions
            .fetch_add(transitions as u64, Ordering::Relaxed);
        let mut results = Vec::with_capacity(batch.len());
        for (index, op) in batch.iter().enumerate() {
            if !included(&index) {
                results.push(None);
                continue;
            }
            match self.execute(op) {
                Ok(output) => results.push(Some(Ok(output))),
                // SQLite may have rolled the whole transaction back by itself (disk full, I/O):
                // then no statement may run any more, or each would commit on its own.
                Err(error) if error.is_transient() || self.connection.is_autocommit() => {
                    self.roll_back();
                    return Attempt::Failed(match error.is_transient() {
                        true => error,
                        false => StoreError::Unavailable(format!(
                            "the transaction was rolled back after: {error}"
                        )),
                    });
                }
                Err(error) if op.writes() => {
                    self.roll_back();
                    return Attempt::OperationFailed(index, error);
                }
                // A read that failed wrote nothing: the others stand.
                Err(error) => results.push(Some(Err(error))),
            }
        }
        if let Err(e) = run(&self.connection, "COMMIT") {
            self.roll_back();
            return Attempt::Failed(match db(e) {
                StoreError::Database(reason) => StoreError::Unavailable(reason),
                transient => transient,
            });
        }
        Attempt::Committed(results)
    }

    /// Rolls the open transaction back, if SQLite has not already.
    fn roll_back(&self) {
        if !self.connection.is_autocommit() {
            let _ = run(&self.connection, "ROLLBACK");
        }
    }

    /// After a failure of the environment, the log is kept short for a while. On a full disk,
    /// SQLite's automatic checkpoint (every 1,000 pages, about 4 MB) may never get its turn:
    /// the log would take every byte freed and fill the disk again before it.
    fn keep_log_short(&mut self) {
        if self.starved.is_none() {
            // Each restart of the log also gives its file's space back to the disk.
            let _ = self
                .connection
                .execute_batch("PRAGMA journal_size_limit = 0");
        }
        self.starved = Some(Instant::now());
    }

    /// While the log is kept short, copies it into the database before every batch (without
    /// waiting for other processes): once a checkpoint has copied everything, SQLite starts
    /// the log over at the next write instead of growing it.
    fn relieve_log(&mut self) {
        let Some(failed_at) = self.starved else {
            return;
        };
        if failed_at.elapsed() > CALM {
            self.starved = None;
            let _ = self
                .connection
                .execute_batch("PRAGMA journal_size_limit = -1");
            return;
        }
        if self
            .checkpoint_failed
            .is_some_and(|at| at.elapsed() < CHECKPOINT_RETRY)
        {
            return;
        }
        let checkpoint = self
            .connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        self.checkpoint_failed = match checkpoint {
            Ok((0, log, done)) if log == done => None,
            _ => Some(Instant::now()),
        };
    }

    /// Runs one operation inside the open transaction.
    fn execute(&self, op: &Op) -> Result<Output, StoreError> {
        let (c, e) = (&self.connection, &self.effects);
        match op {
            Op::Publish(messages, _) => insert_messages(c, e, messages).map(|()| Output::Unit),
            Op::Receive(topics, max, lease, _) => {
                receive(c, topics, *max, *lease).map(Output::Received)
            }
            Op::Settle(settlements, _) => settle(c, e, settlements).map(|()| Output::Unit),
            Op::Commit(transitions, _) => {
                // No savepoint: a transition checks everything that can make it conflict
                // before its first write; an error after that fails the whole operation.
                let mut outcomes = Vec::with_capacity(transitions.len());
                for t in transitions {
                    outcomes.push(match apply_transition(c, e, t)? {
                        true => CommitOutcome::Committed,
                        false => CommitOutcome::Conflict,
                    });
                }
                Ok(Output::Committed(outcomes))
            }
            Op::Load(id, with_history, _) => load(c, id, *with_history).map(Output::Loaded),
            Op::DeadLetters(limit, _) => dead_letters(c, *limit).map(Output::Dead),
            Op::ReserveIds(count, _) => reserve_ids(c, *count).map(Output::Ids),
        }
    }
}

impl Committed {
    /// A batch that failed whole: every operation gets `failure`.
    fn failed(batch: Vec<Op>, failure: StoreError) -> Self {
        let mut spent = Vec::new();
        let answers = batch
            .into_iter()
            .map(|op| op.answer(Err(failure.clone()), &mut spent))
            .collect();
        Committed {
            answers,
            failure: Some(failure),
            wrote: false,
            published: false,
            finished: Vec::new(),
            spent,
        }
    }
}

/// Runs a parameterless statement through the statement cache (transaction control runs many
/// times per batch: parsing it each time showed in profiles).
fn run(c: &Connection, sql: &str) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute([])
}

/// A transition that must not apply: roll back what it did so far.
#[derive(Debug)]
struct Conflict;

/// A transition with its values encoded for their columns.
struct Encoded {
    workflow_id: WorkflowId,
    expected_version: u64,
    /// With its encoded parent step.
    header: Option<(WorkflowHeader, Option<Vec<u8>>)>,
    state: Vec<u8>,
    is_final: bool,
    /// The appended events as one value; `None` when nothing is appended.
    events: Option<Vec<u8>>,
    outbox: Vec<Outgoing>,
    consumed: Option<DeliveryId>,
    dead_letter: Option<String>,
}

impl Encoded {
    fn new(t: Transition) -> Result<Self, StoreError> {
        let encoded = |e: infinitic_core::CodecError| {
            StoreError::Database(format!("cannot encode workflow {}: {e}", t.workflow_id))
        };
        let header = match t.header {
            Some(header) => {
                let parent = header.parent.as_ref().map(encode).transpose();
                Some((header, parent.map_err(encoded)?))
            }
            None => None,
        };
        let events = match t.append.is_empty() {
            true => None,
            false => Some(encode(&t.append).map_err(encoded)?),
        };
        Ok(Self {
            state: encode(&t.state).map_err(encoded)?,
            is_final: t.state.is_final(),
            workflow_id: t.workflow_id,
            expected_version: t.expected_version,
            header,
            events,
            outbox: t.outbox,
            consumed: t.consumed,
            dead_letter: t.dead_letter,
        })
    }
}

/// Inserts messages (with their reserved id, if they have one).
fn insert_messages(
    c: &Connection,
    effects: &Effects,
    messages: &[Outgoing],
) -> Result<(), StoreError> {
    let mut insert = c
        .prepare_cached(
            "INSERT INTO queue (id, topic, key, payload, visible_at, attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(db)?;
    for m in messages {
        // A message its sender processes itself is stored leased to it (first delivery).
        let (visible_at, attempts) = match m.local_lease {
            Some(lease) => (m.deliver_at.max(now()) + lease, 1),
            None => {
                effects.published.set(true);
                (m.deliver_at, 0)
            }
        };
        insert
            .execute(params![
                m.id,
                m.topic,
                m.key,
                m.payload,
                millis(visible_at),
                attempts
            ])
            .map_err(db)?;
    }
    Ok(())
}

/// Moves the queue's id sequence past `count` ids and returns them: AUTOINCREMENT never hands
/// out an id at or below the sequence, in this process or another.
fn reserve_ids(c: &Connection, count: u32) -> Result<std::ops::Range<DeliveryId>, StoreError> {
    let count = i64::from(count.max(1));
    let current: i64 = c
        .query_row(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'queue'), 0),
                        coalesce((SELECT max(id) FROM queue), 0))",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    let end = current + count;
    let updated = c
        .execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'queue'",
            [end],
        )
        .map_err(db)?;
    if updated == 0 {
        c.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('queue', ?1)",
            [end],
        )
        .map_err(db)?;
    }
    Ok(current + 1..end + 1)
}

fn receive(
    c: &Connection,
    topics: &[String],
    max: usize,
    lease: Duration,
) -> Result<Received, StoreError> {
    let now = now();
    let until = millis(now + lease);
    let mut received = Received::default();
    let mut select = c
        .prepare_cached(
            // No `LIMIT ?`: a bound limit made SQLite prepare the statement again on every
            // call. Rows are read one at a time, so stopping early costs nothing.
            "SELECT id, key, payload, attempts, visible_at FROM queue
             WHERE topic = ?1 ORDER BY visible_at, id",
        )
        .map_err(db)?;
    let mut lease_one = c
        .prepare_cached("UPDATE queue SET visible_at = ?1, attempts = attempts + 1 WHERE id = ?2")
        .map_err(db)?;
    for topic in topics {
        let room = max.saturating_sub(received.deliveries.len());
        let rows = select
            .query_map([topic], |r| Ok((r.get::<_, i64>(0)?, read_queue_row(r))))
            .map_err(db)?
            // With no room, one row still tells when the next message is due.
            .take(room.max(1))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        for (id, row) in rows {
            // A row this build did not write (a foreign tool, a bug) must not stall the topic.
            let (key, payload, attempts, visible_at) = match row {
                Ok(row) => row,
                Err(reason) => {
                    dead_letter_row(c, id, &format!("unreadable queue row {id}: {reason}"))?;
                    continue;
                }
            };
            if visible_at > now || room == 0 {
                received.next_visible_at = Some(
                    received
                        .next_visible_at
                        .map_or(visible_at, |t| t.min(visible_at)),
                );
                break;
            }
            lease_one.execute(params![until, id]).map_err(db)?;
            received.deliveries.push(Delivery {
                id,
                topic: topic.clone(),
                key,
                payload,
                attempt: u32::try_from(attempts + 1).unwrap_or(u32::MAX),
            });
        }
    }
    Ok(received)
}

/// A queue row's fields, each checked for its type: key, payload, attempts, visible at.
type QueueRow = (String, Vec<u8>, i64, Timestamp);

fn read_queue_row(r: &rusqlite::Row<'_>) -> Result<QueueRow, String> {
    let key = match r.get_ref(1).map_err(|e| e.to_string())? {
        ValueRef::Text(text) => {
            String::from_utf8(text.to_vec()).map_err(|_| "its key is not UTF-8 text".to_string())?
        }
        other => {
            return Err(format!(
                "its key is {}, not TEXT",
                sql_type(other.data_type())
            ))
        }
    };
    let payload = match r.get_ref(2).map_err(|e| e.to_string())? {
        ValueRef::Blob(bytes) => bytes.to_vec(),
        other => {
            return Err(format!(
                "its payload is {}, not a BLOB",
                sql_type(other.data_type())
            ))
        }
    };
    let integer = |index: usize, name: &str| match r.get_ref(index) {
        Ok(ValueRef::Integer(n)) => Ok(n),
        Ok(other) => Err(format!(
            "its {name} is {}, not INTEGER",
            sql_type(other.data_type())
        )),
        Err(e) => Err(e.to_string()),
    };
    let attempts = integer(3, "attempt count")?;
    let visible_at = integer(4, "visibility time")?;
    let visible_at = Timestamp::from_millis(u64::try_from(visible_at).unwrap_or(0));
    Ok((key, payload, attempts, visible_at))
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

/// Moves a queue row to the dead letters, whatever its column types.
fn dead_letter_row(c: &Connection, id: DeliveryId, reason: &str) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO dead_letters (topic, key, payload, reason, at)
         SELECT CAST(topic AS TEXT), CAST(coalesce(key, '') AS TEXT),
                CAST(coalesce(payload, x'') AS BLOB), ?1, ?2
         FROM queue WHERE id = ?3",
    )
    .map_err(db)?
    .execute(params![reason, millis(now()), id])
    .map_err(db)?;
    c.prepare_cached("DELETE FROM queue WHERE id = ?1")
        .map_err(db)?
        .execute([id])
        .map_err(db)?;
    Ok(())
}

fn settle(c: &Connection, effects: &Effects, settlements: &[Settlement]) -> Result<(), StoreError> {
    let mut delete = c
        .prepare_cached("DELETE FROM queue WHERE id = ?1")
        .map_err(db)?;
    for s in settlements {
        match s {
            Settlement::Ack { delivery, publish } => {
                // Already gone (lease expired and another consumer settled it): the publish
                // must not happen twice either.
                if delete.execute([delivery]).map_err(db)? == 1 {
                    insert_messages(c, effects, publish)?;
                }
            }
            Settlement::Retry { delivery, at } => {
                c.prepare_cached("UPDATE queue SET visible_at = ?1 WHERE id = ?2")
                    .map_err(db)?
                    .execute(params![millis(*at), delivery])
                    .map_err(db)?;
            }
            Settlement::DeadLetter {
                delivery,
                reason,
                publish,
            } => {
                let moved = c
                    .prepare_cached(
                        "INSERT INTO dead_letters (topic, key, payload, reason, at)
                         SELECT topic, key, payload, ?1, ?2 FROM queue WHERE id = ?3",
                    )
                    .map_err(db)?
                    .execute(params![reason, millis(now()), delivery])
                    .map_err(db)?;
                if moved == 1 {
                    delete.execute([delivery]).map_err(db)?;
                    insert_messages(c, effects, publish)?;
                }
            }
        }
    }
    Ok(())
}

/// Applies one transition; `false` when its compare-and-set fails (then nothing of it was
/// written: both checks come before the first write).
fn apply_transition(c: &Connection, effects: &Effects, t: &Encoded) -> Result<bool, StoreError> {
    match try_apply(c, effects, t)? {
        Ok(()) => {
            if t.is_final {
                effects.finished.borrow_mut().push(t.workflow_id.clone());
            }
            Ok(true)
        }
        Err(Conflict) => Ok(false),
    }
}

fn try_apply(
    c: &Connection,
    effects: &Effects,
    t: &Encoded,
) -> Result<Result<(), Conflict>, StoreError> {
    let id = t.workflow_id.as_str();
    let state = &t.state;
    let now = millis(now());
    let expected = i64::try_from(t.expected_version).unwrap_or(i64::MAX);
    if t.expected_version == 0 {
        // The consumed message must still be there (not applied by another consumer). Checked
        // before the first write; creating an instance is rare enough for its own statement.
        if let Some(delivery) = t.consumed {
            let present = c
                .prepare_cached("SELECT 1 FROM queue WHERE id = ?1")
                .map_err(db)?
                .exists([delivery])
                .map_err(db)?;
            if !present {
                return Ok(Err(Conflict));
            }
        }
        let Some((header, parent)) = &t.header else {
            return Err(StoreError::Database(format!(
                "creating workflow {id} needs its header"
            )));
        };
        let inserted = c
            .prepare_cached(
                "INSERT INTO workflows (id, workflow, method, input, started_at, parent, state,
                                        version, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8)
                 ON CONFLICT (id) DO NOTHING",
            )
            .map_err(db)?
            .execute(params![
                id,
                header.workflow,
                header.method,
                header.input,
                millis(header.started_at),
                parent,
                state,
                now
            ])
            .map_err(db)?;
        if inserted == 0 {
            return Ok(Err(Conflict));
        }
    } else {
        // One statement checks both conditions before writing: the version (compare-and-set)
        // and that the consumed message is still there (not applied by another consumer).
        // No RETURNING: SQLite builds a temporary table for it, which showed in profiles.
        let updated = c
            .prepare_cached(
                "UPDATE workflows SET state = ?1, version = version + 1, updated_at = ?2,
                        started_at = coalesce(?4, started_at)
                 WHERE id = ?3 AND version = ?5
                   AND (?6 IS NULL OR EXISTS (SELECT 1 FROM queue WHERE id = ?6))",
            )
            .map_err(db)?
            .execute(params![
                state,
                now,
                id,
                t.header.as_ref().map(|(h, _)| millis(h.started_at)),
                expected,
                t.consumed
            ])
            .map_err(db)?;
        if updated == 0 {
            return Ok(Err(Conflict));
        }
    }
    if let (Some(delivery), Some(reason)) = (t.consumed, &t.dead_letter) {
        c.prepare_cached(
            "INSERT INTO dead_letters (topic, key, payload, reason, at)
             SELECT topic, key, payload, ?1, ?2 FROM queue WHERE id = ?3",
        )
        .map_err(db)?
        .execute(params![reason, now, delivery])
        .map_err(db)?;
    }
    if let Some(delivery) = t.consumed {
        let deleted = c
            .prepare_cached("DELETE FROM queue WHERE id = ?1")
            .map_err(db)?
            .execute([delivery])
            .map_err(db)?;
        if deleted == 0 {
            // Checked present before the first write, in this same transaction: cannot happen.
            return Err(StoreError::Database(format!(
                "message {delivery} vanished while workflow {id} consumed it"
            )));
        }
    }
    if let Some(bytes) = &t.events {
        c.prepare_cached("INSERT INTO history (workflow_id, seq, events) VALUES (?1, ?2, ?3)")
            .map_err(db)?
            .execute(params![id, expected, bytes])
            .map_err(db)?;
    }
    insert_messages(c, effects, &t.outbox).map(Ok)
}

fn load(
    c: &Connection,
    id: &WorkflowId,
    with_history: bool,
) -> Result<Option<StoredWorkflow>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT workflow, method, input, started_at, parent, state, version
             FROM workflows WHERE id = ?1",
        )
        .map_err(db)?
        .query_row([id.as_str()], |r| {
            (0..7)
                .map(|i| r.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .optional()
        .map_err(db)?;
    let Some(row) = row else {
        return Ok(None);
    };
    // A damaged row is reported with as much as could be read, so a worker can park it.
    let version = match row[6] {
        Value::Integer(v) => u64::try_from(v).ok(),
        _ => None,
    };
    let state: Option<WorkflowState> = match &row[5] {
        Value::Blob(bytes) => decode(bytes).ok(),
        _ => None,
    };
    let undecodable = |what: &str, reason: String| StoreError::Undecodable {
        id: id.clone(),
        version,
        state: state.clone(),
        what: what.into(),
        reason,
    };
    let text = |index: usize, what: &str| match &row[index] {
        Value::Text(text) => Ok(text.clone()),
        other => Err(undecodable(
            what,
            format!("{} is not TEXT", sql_type(other.data_type())),
        )),
    };
    let blob = |index: usize, what: &str| match &row[index] {
        Value::Blob(bytes) => Ok(bytes.clone()),
        other => Err(undecodable(
            what,
            format!("{} is not a BLOB", sql_type(other.data_type())),
        )),
    };
    let workflow = text(0, "workflow name")?;
    let method = text(1, "method name")?;
    let input = blob(2, "input")?;
    let started_at = match row[3] {
        Value::Integer(t) => Timestamp::from_millis(u64::try_from(t).unwrap_or(0)),
        ref other => {
            return Err(undecodable(
                "start time",
                format!("{} is not INTEGER", sql_type(other.data_type())),
            ))
        }
    };
    let parent = match &row[4] {
        Value::Null => None,
        Value::Blob(bytes) => {
            Some(decode(bytes).map_err(|e| undecodable("parent", e.to_string()))?)
        }
        other => {
            return Err(undecodable(
                "parent",
                format!("{} is not a BLOB", sql_type(other.data_type())),
            ))
        }
    };
    let state = match state.clone() {
        Some(state) => state,
        None => {
            let reason = match blob(5, "state") {
                Ok(bytes) => decode::<WorkflowState>(&bytes)
                    .err()
                    .map_or_else(String::new, |e| e.to_string()),
                Err(e) => return Err(e),
            };
            return Err(undecodable("state", reason));
        }
    };
    let Some(version) = version else {
        return Err(undecodable(
            "version",
            format!("{} is not INTEGER", sql_type(row[6].data_type())),
        ));
    };
    let history = if with_history {
        let mut select = c
            .prepare_cached("SELECT seq, events FROM history WHERE workflow_id = ?1 ORDER BY seq")
            .map_err(db)?;
        let rows = select
            .query_map([id.as_str()], |r| {
                Ok((r.get::<_, Value>(0)?, r.get::<_, Value>(1)?))
            })
            .map_err(db)?;
        let mut events = Vec::new();
        for row in rows {
            let (seq, bytes) = row.map_err(db)?;
            let what = format!("history row {seq:?}");
            let Value::Blob(bytes) = bytes else {
                return Err(undecodable(
                    &what,
                    format!("{} is not a BLOB", sql_type(bytes.data_type())),
                ));
            };
            let batch: Vec<HistoryEvent> =
                decode(&bytes).map_err(|e| undecodable(&what, e.to_string()))?;
            events.extend(batch);
        }
        events
    } else {
        Vec::new()
    };
    Ok(Some(StoredWorkflow {
        id: id.clone(),
        header: WorkflowHeader {
            workflow,
            method,
            input,
            started_at,
            parent,
        },
        state,
        version,
        history,
    }))
}

fn dead_letters(c: &Connection, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let mut select = c
        .prepare_cached(
            "SELECT topic, key, reason, payload FROM dead_letters ORDER BY id DESC LIMIT ?1",
        )
        .map_err(db)?;
    let rows = select
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(DeadLetter {
                topic: r.get(0)?,
                key: r.get(1)?,
                reason: r.get(2)?,
                payload: r.get(3)?,
            })
        })
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}
