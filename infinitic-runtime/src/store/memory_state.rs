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

use super::{
    CommitOutcome, Finished, OutboxEntry, Outgoing, Pending, StateStore, StoreError,
    StoredWorkflow, Transition, WorkflowHeader, WorkflowState,
};
use infinitic_core::message::MessageId;
use infinitic_core::{HistoryEvent, WorkflowId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, oneshot};

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
    workflows: HashMap<WorkflowId, Instance>,
    /// Ids of the messages committed transitions consumed. Kept for the store's lifetime (a
    /// database would forget them past the longest redelivery delay).
    consumed: HashSet<MessageId>,
    /// Committed, not yet published: by the order they were committed in.
    outbox: BTreeMap<u64, Outgoing>,
    next_entry: u64,
}

#[derive(Debug, Clone)]
struct Instance {
    header: WorkflowHeader,
    state: WorkflowState,
    version: u64,
    history: Vec<HistoryEvent>,
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
        // Every change below is applied whole under the lock: a panic elsewhere cannot leave
        // it half-done.
        self.shared
            .contents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a commit at once (commits apply in the order they are called), each transition
    /// whole or not at all; a transition that cannot be valid fails the call whole.
    fn commit_now(&self, transitions: &[Transition]) -> Result<Vec<CommitOutcome>, StoreError> {
        if let Some(t) = transitions
            .iter()
            .find(|t| t.expected_version == 0 && t.header.is_none())
        {
            return Err(StoreError::Database(format!(
                "creating workflow {} needs its header",
                t.workflow_id
            )));
        }
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
        let current = self.workflows.get(&t.workflow_id).map(|w| w.version);
        let fits = match (t.expected_version, current) {
            (0, None) => t.header.is_some(),
            (expected, Some(version)) => expected != 0 && expected == version,
            (_, None) => false,
        };
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
        match self.workflows.get_mut(&t.workflow_id) {
            Some(instance) => {
                instance.version += 1;
                instance.state = t.state.clone();
                if let Some(header) = &t.header {
                    instance.header.started_at = header.started_at;
                }
                instance.history.extend(t.append.iter().cloned());
            }
            None => {
                let Some(header) = t.header.clone() else {
                    // `fits` needs the header to create: cannot happen.
                    return CommitOutcome::Conflict;
                };
                self.workflows.insert(
                    t.workflow_id.clone(),
                    Instance {
                        header,
                        state: t.state.clone(),
                        version: 1,
                        history: t.append.clone(),
                    },
                );
            }
        }
        CommitOutcome::Committed
    }
}

impl StateStore for MemoryStateStore {
    async fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        let contents = self.contents();
        Ok(contents.workflows.get(id).map(|w| StoredWorkflow {
            id: id.clone(),
            header: w.header.clone(),
            state: w.state.clone(),
            version: w.version,
            history: match with_history {
                true => w.history.clone(),
                false => Vec::new(),
            },
        }))
    }

    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>> {
        let (reply, answer) = oneshot::channel();
        let _ = reply.send(self.commit_now(&transitions));
        Pending::new(answer)
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
