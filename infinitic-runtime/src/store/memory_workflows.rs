//! The workflow instances of the in-memory stores: what both keep, whether they are their own
//! transport ([`super::memory::MemoryStore`]) or a state store alone
//! ([`super::memory_state::MemoryStateStore`]).

use super::{StoreError, StoredWorkflow, Transition, WorkflowHeader, WorkflowState};
use infinitic_core::{HistoryEvent, WorkflowId};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Instances by id: compare-and-set on their versions.
#[derive(Debug, Default)]
pub(super) struct WorkflowTable {
    instances: HashMap<WorkflowId, Instance>,
}

#[derive(Debug, Clone)]
struct Instance {
    header: WorkflowHeader,
    state: WorkflowState,
    version: u64,
    history: Vec<HistoryEvent>,
    report_to: Vec<String>,
}

impl WorkflowTable {
    /// A commit that cannot be valid (creating an instance without its header) fails whole.
    pub(super) fn check(transitions: &[Transition]) -> Result<(), StoreError> {
        match transitions
            .iter()
            .find(|t| t.expected_version == 0 && t.header.is_none())
        {
            Some(t) => Err(StoreError::Database(format!(
                "creating workflow {} needs its header",
                t.workflow_id
            ))),
            None => Ok(()),
        }
    }

    /// Whether `t` was computed from the instance's current version (0: it does not exist).
    pub(super) fn fits(&self, t: &Transition) -> bool {
        match (t.expected_version, self.instances.get(&t.workflow_id)) {
            (0, None) => t.header.is_some(),
            (expected, Some(instance)) => expected != 0 && expected == instance.version,
            (_, None) => false,
        }
    }

    /// Applies the state and history of a transition that [`Self::fits`].
    pub(super) fn apply(&mut self, t: &Transition) {
        match self.instances.get_mut(&t.workflow_id) {
            Some(instance) => {
                instance.version += 1;
                instance.state = t.state.clone();
                if let Some(header) = &t.header {
                    instance.header.started_at = header.started_at;
                }
                instance.history.extend(t.append.iter().cloned());
                if let Some(report_to) = &t.report_to {
                    instance.report_to.clone_from(report_to);
                }
            }
            None => {
                if let Some(header) = t.header.clone() {
                    let instance = Instance {
                        header,
                        state: t.state.clone(),
                        version: 1,
                        history: t.append.clone(),
                        report_to: t.report_to.clone().unwrap_or_default(),
                    };
                    self.instances.insert(t.workflow_id.clone(), instance);
                }
            }
        }
    }

    pub(super) fn load(&self, id: &WorkflowId, with_history: bool) -> Option<StoredWorkflow> {
        self.instances.get(id).map(|w| StoredWorkflow {
            id: id.clone(),
            header: w.header.clone(),
            state: w.state.clone(),
            version: w.version,
            history: match with_history {
                true => w.history.clone(),
                false => Vec::new(),
            },
            report_to: w.report_to.clone(),
        })
    }
}

/// Locks an in-memory store's contents. Every change is applied whole under the lock, so a
/// panic elsewhere while it was held leaves nothing half-done: the contents stay usable.
pub(super) fn lock<T>(contents: &Mutex<T>) -> MutexGuard<'_, T> {
    contents
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
