//! The cold path: an instance that is not in the cache is rebuilt by replaying its stored
//! history with the registered code; one that cannot go on is parked, its event kept.

use super::instances::{Effect, Instances, Live};
use super::not_applied::NotApplied;
use super::parked::Parked;
use crate::protocol;
use crate::store::{StoredWorkflow, WorkflowState};
use infinitic_core::{replay_with_limits, CommandRecord, History, Status};

/// What replaying an instance's history gave.
pub(super) enum Rebuilt {
    /// Running: the live instance, and the commands replay produced past the end of history
    /// (recorded by the transition that applies the event).
    Live(Box<Live>, Vec<CommandRecord>),
    /// Nothing to run: the event is settled with this effect.
    Done(Effect),
    /// Parked: the event is stored with it.
    Parked(Parked),
}

impl Instances {
    /// Cold path: replay the stored history with the registered code.
    pub(super) fn rebuild(&self, stored: StoredWorkflow) -> Result<Rebuilt, NotApplied> {
        match &stored.state {
            WorkflowState::Running => {}
            // Its events are stored with it, for when it is retried after a fix.
            WorkflowState::Parked(reason) => {
                return Ok(Rebuilt::Parked(Parked {
                    reason: reason.clone(),
                    version: stored.version,
                    history: stored.history,
                }))
            }
            state if state.is_final() => return Ok(Rebuilt::Done(Effect::Ack)), // late event
            _ => {
                return Err(NotApplied::Never(format!(
                    "event for workflow {} that has not started",
                    stored.id
                )))
            }
        }
        let definition = self
            .definitions
            .get(&stored.header.workflow)
            .cloned()
            .ok_or_else(|| {
                NotApplied::Never(format!(
                    "no workflow named `{}` is registered",
                    stored.header.workflow
                ))
            })?;
        let history = History {
            workflow_id: stored.id.clone(),
            generation: stored.header.generation,
            workflow: stored.header.workflow.clone(),
            method: stored.header.method.clone(),
            input: stored.header.input.clone(),
            started_at: stored.header.started_at,
            events: stored.history,
        };
        // The event that found the instance unable to go on is kept, not consumed.
        let parked = |reason: String| NotApplied::Later {
            park: Some(Box::new(protocol::park(
                &stored.id,
                stored.version,
                &reason,
                &stored.report_to,
                self.clock.now(),
            ))),
            reason: format!("workflow {} parked: {reason}", stored.id),
        };
        let replayed = match replay_with_limits(&*definition, &history, self.limits) {
            Ok(replayed) => replayed,
            Err(error) => return Err(parked(error.to_string())),
        };
        match replayed.status {
            Status::Running => Ok(Rebuilt::Live(
                Box::new(Live {
                    instance: replayed.instance,
                    version: stored.version,
                    generation: stored.header.generation,
                    workflow: stored.header.workflow,
                    parent: stored.header.parent,
                    report_to: stored.report_to,
                }),
                replayed.new_commands,
            )),
            Status::Parked(reason) => Err(parked(reason.to_string())),
            Status::Completed(_) => Err(parked(
                "replay completed the workflow before the end of its history".into(),
            )),
        }
    }
}
