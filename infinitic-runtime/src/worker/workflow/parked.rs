//! A parked instance keeps what arrives for it: outcomes, timers and signals are stored with it
//! (appended to its history; it stays parked) by the transition that consumes them, to be
//! applied when it is retried after a fix.

use super::instances::Effect;
use crate::protocol;
use crate::store::{Consumed, WorkflowState};
use infinitic_core::{CommandId, Completion, HistoryEvent, StepOutcome, Timestamp, WorkflowId};

/// A parked instance, as stored.
pub(super) struct Parked {
    pub(super) reason: String,
    pub(super) version: u64,
    pub(super) history: Vec<HistoryEvent>,
}

/// An outcome for a parked instance: stored with it (see [`Parked::keep`]), so it is applied
/// when the instance is retried after a fix.
pub(super) fn keep_for_parked(
    parked: Parked,
    consumed: Consumed,
    command: CommandId,
    outcome: StepOutcome,
    at: Timestamp,
) -> Effect {
    let same = |event: &HistoryEvent| {
        matches!(event, HistoryEvent::Completed(c)
            if c.run == command.run && c.position == command.position)
    };
    let completion = HistoryEvent::Completed(Completion {
        run: command.run,
        position: command.position,
        at,
        outcome,
    });
    parked.keep(&command.workflow, completion, same, consumed)
}

impl Parked {
    /// Stores `event` with the parked instance `id` (appended to its history; it stays parked)
    /// by the transition that consumes its message; an event its history already holds
    /// (`same` finds it) changes nothing.
    pub(super) fn keep(
        self,
        id: &WorkflowId,
        event: HistoryEvent,
        same: impl Fn(&HistoryEvent) -> bool,
        consumed: Consumed,
    ) -> Effect {
        if self.history.iter().any(same) {
            return Effect::Ack;
        }
        Effect::transition(protocol::step(
            id,
            self.version,
            None,
            WorkflowState::Parked(self.reason),
            vec![event],
            Vec::new(),
            consumed,
        ))
    }
}
