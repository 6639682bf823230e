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

/// Which use of a workflow id an instance is: 0 for the first instance with that id, one more
/// each time the id is used again (a custom id reused after its instance ended, or a run that
/// continues as new). Part of every command id, so a late completion meant for an earlier
/// instance never applies to a later one, and service idempotency keys never repeat.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u32);

impl Generation {
    /// The first instance of an id (and every instance stored before generations existed).
    pub const FIRST: Generation = Generation(0);

    /// Whether this is [`Generation::FIRST`] (serialization leaves it out, so the bytes of
    /// first-generation ids are those of earlier builds).
    pub fn is_first(&self) -> bool {
        *self == Generation::FIRST
    }
}

/// The deterministic id of a durable command: (workflow id, generation, method run, position).
///
/// Replaying the same code against the same history produces the same ids, so a service sees
/// a stable task id across redeliveries and re-executions: use it as an idempotency key. The
/// first generation's ids read `workflow/run/position`, later ones
/// `workflow@generation/run/position`.
///
/// ```
/// use infinitic_core::{CommandId, Generation, MethodRun, WorkflowId};
/// let id = CommandId::new(WorkflowId::new("wf-1"), MethodRun(0), 3);
/// assert_eq!(id.to_string(), "wf-1/0/3");
/// assert_eq!(id.in_generation(Generation(2)).to_string(), "wf-1@2/0/3");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommandId {
    /// The instance that issued the command.
    pub workflow: WorkflowId,
    /// The method run within that instance.
    pub run: MethodRun,
    /// The command's position within the method run.
    pub position: Position,
    /// Which use of that id the instance is. Last, and left out for the first generation:
    /// compact encodings (the stored parent step) are arrays, which an earlier build wrote
    /// with three elements.
    #[serde(default, skip_serializing_if = "Generation::is_first")]
    pub generation: Generation,
}

impl CommandId {
    /// Builds a command id of the first generation.
    pub fn new(workflow: WorkflowId, run: MethodRun, position: Position) -> Self {
        Self {
            workflow,
            run,
            position,
            generation: Generation::FIRST,
        }
    }

    /// The same command in instance generation `generation`.
    pub fn in_generation(mut self, generation: Generation) -> Self {
        self.generation = generation;
        self
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.generation {
            Generation(0) => write!(f, "{}/{}/{}", self.workflow, self.run, self.position),
            Generation(g) => write!(f, "{}@{g}/{}/{}", self.workflow, self.run, self.position),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(generation: u32) -> CommandId {
        CommandId::new(WorkflowId::new("wf"), MethodRun(1), 7).in_generation(Generation(generation))
    }

    #[test]
    fn a_first_generation_id_encodes_as_earlier_builds_wrote_it() {
        #[derive(Serialize, Deserialize)]
        struct Before {
            workflow: WorkflowId,
            run: MethodRun,
            position: Position,
        }
        let before = Before {
            workflow: WorkflowId::new("wf"),
            run: MethodRun(1),
            position: 7,
        };
        // Both forms: compact (arrays, as stored parent steps) and named (as messages).
        let compact = rmp_serde::to_vec(&before).unwrap();
        let named = rmp_serde::to_vec_named(&before).unwrap();
        assert_eq!(rmp_serde::to_vec(&id(0)).unwrap(), compact);
        assert_eq!(rmp_serde::to_vec_named(&id(0)).unwrap(), named);
        assert_eq!(rmp_serde::from_slice::<CommandId>(&compact).unwrap(), id(0));
        assert_eq!(rmp_serde::from_slice::<CommandId>(&named).unwrap(), id(0));
    }

    #[test]
    fn a_later_generation_round_trips_and_shows_in_the_text() {
        for bytes in [rmp_serde::to_vec(&id(3)), rmp_serde::to_vec_named(&id(3))] {
            assert_eq!(
                rmp_serde::from_slice::<CommandId>(&bytes.unwrap()).unwrap(),
                id(3)
            );
        }
        assert_eq!(id(0).to_string(), "wf/1/7");
        assert_eq!(id(3).to_string(), "wf@3/1/7");
    }
}
