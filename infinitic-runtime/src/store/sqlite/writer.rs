//! The writer thread: runs every operation waiting at the time in one transaction (group
//! commit), whole or not at all, and hands the batch to the sync thread to be answered.

use super::queue::{dead_letters, insert_messages, receive, reserve_ids, settle};
use super::stats::Counters;
use super::workflows::{apply_transition, load, Encoded};
use super::{db, run};
use crate::clock::Clock;
use crate::store::{
    CommitOutcome, DeadLetter, Outgoing, Received, Settlement, StoreError, StoredWorkflow,
};
use infinitic_core::{Timestamp, WorkflowId};
use rusqlite::Connection;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most operations grouped into one transaction.
pub(super) const MAX_BATCH: usize = 512;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Op {
    Publish(Vec<Outgoing>, Reply<()>),
    Receive(Vec<String>, usize, Duration, Reply<Received>),
    Settle(Vec<Settlement>, Reply<()>),
    Commit(Vec<Encoded>, Reply<Vec<CommitOutcome>>),
    ReserveIds(u32, Reply<std::ops::Range<u64>>),
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
                    Output::Loaded(w) => Ok(w.map(|w| *w)),
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
pub(super) enum Output {
    Unit,
    Received(Received),
    Committed(Vec<CommitOutcome>),
    Ids(std::ops::Range<u64>),
    Loaded(Option<Box<StoredWorkflow>>),
    Dead(Vec<DeadLetter>),
}

/// The single writer: owns the connection, runs batches of operations in transactions.
pub(super) struct Writer {
    pub(super) stats: Arc<Counters>,
    pub(super) connection: Connection,
    pub(super) effects: Effects,
    /// Where each batch goes once committed, to be made durable and answered.
    pub(super) synced: mpsc::Sender<Committed>,
    /// Set by the sync thread when an fsync failed: nothing runs any more.
    pub(super) broken: Arc<OnceLock<String>>,
    /// When a batch last failed for a reason of the environment (disk full, above all): the
    /// log is kept short until [`CALM`] has passed without another.
    pub(super) starved: Option<Instant>,
    /// When a checkpoint last failed: tried again after [`CHECKPOINT_RETRY`].
    pub(super) checkpoint_failed: Option<Instant>,
    /// What "now" is for visibility, leases and timestamps.
    pub(super) clock: Arc<dyn Clock>,
}

/// How long the log is kept short after a failure of the environment.
pub(super) const CALM: Duration = Duration::from_secs(30);

/// How often a checkpoint is tried at most while it fails.
pub(super) const CHECKPOINT_RETRY: Duration = Duration::from_millis(100);

/// A batch the writer has finished: its answers and what others should hear about, sent once
/// it is on disk.
pub(super) struct Committed {
    pub(super) answers: Vec<Answer>,
    /// The whole batch failed (rolled back): every answer is this error.
    pub(super) failure: Option<StoreError>,
    /// It committed changes, which must be synced before anything is answered.
    pub(super) wrote: bool,
    /// Messages were published for any consumer.
    pub(super) published: bool,
    /// Instances that reached a final state.
    pub(super) finished: Vec<WorkflowId>,
    /// The batch's transitions, freed by the sync thread rather than the busy writer.
    pub(super) spent: Vec<Vec<Encoded>>,
}

/// What a batch did that others should hear about once it has committed.
#[derive(Default)]
pub(super) struct Effects {
    /// Messages were published for any consumer (not only for their sender).
    pub(super) published: Cell<bool>,
    /// Instances that reached a final state.
    pub(super) finished: RefCell<Vec<WorkflowId>>,
    /// The time the batch runs at, read once per attempt from the store's clock.
    pub(super) now: Cell<Timestamp>,
}

/// An operation's answer, sent only after its transaction committed.
pub(super) enum Answer {
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
        Reply<std::ops::Range<u64>>,
        Result<std::ops::Range<u64>, StoreError>,
    ),
}

impl Answer {
    pub(super) fn send(self, failure: Option<&StoreError>) {
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
pub(super) enum Attempt {
    /// The transaction committed; one result per operation (`None`: excluded earlier).
    Committed(Vec<Option<Result<Output, StoreError>>>),
    /// One operation that writes failed on its own: everything was rolled back, and the batch
    /// runs again without it.
    OperationFailed(usize, StoreError),
    /// The whole batch failed and nothing of it is visible.
    Failed(StoreError),
}

impl Writer {
    pub(super) fn run(mut self, queue: mpsc::Receiver<Op>) {
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
        self.effects.now.set(self.clock.now());
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
                receive(c, topics, *max, *lease, e.now.get()).map(Output::Received)
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
            Op::Load(id, with_history, _) => {
                load(c, id, *with_history).map(|w| Output::Loaded(w.map(Box::new)))
            }
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
