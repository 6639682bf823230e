//! Identifiers: of workflow instances, of method runs, and of the durable commands they issue.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The id of one workflow instance.
///
/// Any string: a generated UUID by default, or a business id (`"user-42-billing"`) when the
/// caller wants at most one instance per id.
///
/// ```
/// use infinitic_core::WorkflowId;
/// let id = WorkflowId::new("user-42");
/// assert_eq!(id.as_str(), "user-42");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(String);

impl WorkflowId {
    /// Wraps a string as a workflow id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for WorkflowId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for WorkflowId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// One execution of a method on a workflow instance: `MethodRun(0)` is the method that
/// started the instance; later runs (several methods on one instance) count up from there.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MethodRun(pub u32);

impl fmt::Display for MethodRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Index of a durable command within one method run, in the order the code created them.
pub type Position = u32;

/// The deterministic id of a durable command: (workflow id, method run, position).
///
/// Replaying the same code against the same history produces the same ids, so a service sees
/// a stable task id across redeliveries and re-executions: use it as an idempotency key.
///
/// ```
/// use infinitic_core::{CommandId, MethodRun, WorkflowId};
/// let id = CommandId::new(WorkflowId::new("wf-1"), MethodRun(0), 3);
/// assert_eq!(id.to_string(), "wf-1/0/3");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommandId {
    /// The instance that issued the command.
    pub workflow: WorkflowId,
    /// The method run within that instance.
    pub run: MethodRun,
    /// The command's position within the method run.
    pub position: Position,
}

impl CommandId {
    /// Builds a command id.
    pub fn new(workflow: WorkflowId, run: MethodRun, position: Position) -> Self {
        Self {
            workflow,
            run,
            position,
        }
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.workflow, self.run, self.position)
    }
}
