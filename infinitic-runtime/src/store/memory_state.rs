//! A state store alone, in memory: the shape of a database beside a broker. A commit writes an
//! instance's state, history and outbox together, compare-and-set on its version, and records
//! the id of the message it consumed, so a redelivered message is recognised whatever its
//! delivery. It publishes nothing and settles nothing: a worker's relay publishes the outbox
//! ([`StateStore::outbox`]), and consumed messages are settled on the transport after their
//! commit. Run it with any transport, the in-memory one included:
//!
//! ```no_run
//! use infinitic_runtime::store::memory::MemoryStore;
//! use infinitic_runtime::store::memory_state::MemoryStateStore;
//! use infinitic_runtime::worker::Worker;
//! # async fn demo() {
//! let worker = Worker::with_backends(MemoryStore::new(), MemoryStateStore::new())
//!     /* .service(..).workflow(..) */
//!     .start();
//! # worker.shutdown().await;
//! # }
//! ```

use super::memory_workflows::{lock, WorkflowTable};
use super::{
    CommitOutcome, Finished, OutboxEntry, Outgoing, Pending, StateStore, StoreError,
    StoredWorkflow, Transition,
};
use infinitic_core::message::MessageId;
use infinitic_core::WorkflowId;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// The in-memory state store. Cheap to clone; clones share the same contents.
#[derive(Clone, Debug)]
pub struct MemoryStateStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    contents: Mutex<Contents>,
    finished: broadcast::Sender<WorkflowId>,
}

#[derive(Debug, Default)]
struct Contents {
    workflows: WorkflowTable,
    /// Ids of the messages committed transitions consumed. Kept for the store's lifetime (a
    /// database would forget them past the longest redelivery delay).
    consumed: HashSet<MessageId>,
    /// Committed, not yet published: by the order they were committed in.
    outbox: BTreeMap<u64, Outgoing>,
    next_entry: u64,
}

impl Default for MemoryStateStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        let (finished, _) = broadcast::channel(4096);
        Self {
            shared: Arc::new(Shared {
                contents: Mutex::new(Contents::default()),
                finished,
            }),
        }
    }

    fn contents(&self) -> MutexGuard<'_, Contents> {
        lock(&self.shared.contents)
    }

    /// Applies a commit at once (commits apply in the order they are called), each transition
    /// whole or not at all; a transition that cannot be valid fails the call whole.
    fn commit_now(&self, transitions: &[Transition]) -> Result<Vec<CommitOutcome>, StoreError> {
        WorkflowTable::check(transitions)?;
        let mut finished = Vec::new();
        let outcomes = {
            let mut contents = self.contents();
            transitions
                .iter()
                .map(|t| {
                    let outcome = contents.apply(t);
                    if outcome == CommitOutcome::Committed && t.state.is_final() {
                        finished.push(t.workflow_id.clone());
                    }
                    outcome
                })
                .collect()
        };
        for id in finished {
            let _ = self.shared.finished.send(id);
        }
        Ok(outcomes)
    }
}

impl Contents {
    /// Applies one transition, or nothing of it on a conflict (the checks come first).
    fn apply(&mut self, t: &Transition) -> CommitOutcome {
        let seen = t
            .consumed
            .as_ref()
            .is_some_and(|c| self.consumed.contains(&c.message));
        let fits = self.workflows.fits(t);
        if seen || !fits {
            return CommitOutcome::Conflict;
        }
        if let Some(consumed) = &t.consumed {
            self.consumed.insert(consumed.message.clone());
        }
        for message in &t.outbox {
            // Handed over in memory only by stores that are their own transport.
            let message = Outgoing {
                local_lease: None,
                id: None,
                ..message.clone()
            };
            self.outbox.insert(self.next_entry, message);
            self.next_entry += 1;
        }
        self.workflows.apply(t);
        CommitOutcome::Committed
    }
}

impl StateStore for MemoryStateStore {
    async fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        Ok(self.contents().workflows.load(id, with_history))
    }

    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>> {
        Pending::ready(self.commit_now(&transitions))
    }

    fn finished(&self) -> Finished {
        Finished::new(self.shared.finished.subscribe())
    }

    async fn outbox(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let contents = self.contents();
        Ok(contents
            .outbox
            .iter()
            .take(max)
            .map(|(id, message)| OutboxEntry {
                id: *id,
                message: message.clone(),
            })
            .collect())
    }

    async fn clear_outbox(&self, ids: Vec<u64>) -> Result<(), StoreError> {
        let mut contents = self.contents();
        for id in ids {
            contents.outbox.remove(&id);
        }
        Ok(())
    }
}
