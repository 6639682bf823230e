//! A start message: a new instance (or a pending one a client stored) runs its first step; a
//! start that cannot run (unknown workflow or method, undecodable arguments) fails the
//! instance and tells a waiting parent.

use super::instances::{scheduled, Effect, Instances, Live};
use super::not_applied::NotApplied;
use super::FIRST_VERSION;
use crate::protocol;
use crate::store::{Consumed, StateStore, WorkflowHeader, WorkflowState};
use infinitic_core::message::ParentStep;
use infinitic_core::{Generation, MethodRun, Start, StepOutcome, WorkflowId, WorkflowInstance};

impl Instances {
    pub(super) async fn start<S: StateStore>(
        &mut self,
        store: &S,
        consumed: Consumed,
        pending: bool,
        StartRequest {
            id,
            generation,
            workflow,
            method,
            input,
            parent,
            reply_to,
        }: StartRequest,
    ) -> Result<Effect, NotApplied> {
        if self.cache.get(&id).is_some() {
            // Started already: a duplicate, or a second client's start of the same id.
            return match reply_to {
                Some(reply_to) => self.watch(store, consumed, &id, reply_to).await,
                None => Ok(Effect::Ack),
            };
        }
        let expected_version = if pending {
            // Stored as pending (first version) with this message: no round trip to the
            // store, which would wait behind the commits in flight. If it moved on meanwhile,
            // the compare-and-set fails and the redelivery takes the path below.
            FIRST_VERSION
        } else {
            let existing = store
                .load(&id, false)
                .await
                .map_err(|e| NotApplied::store(&id, e))?;
            match &existing {
                Some(stored) if stored.state == WorkflowState::Pending => stored.version,
                // Started already: a duplicate, or a second client's start of the same id.
                Some(_) => {
                    return match reply_to {
                        Some(reply_to) => self.watch(store, consumed, &id, reply_to).await,
                        None => Ok(Effect::Ack),
                    }
                }
                None => 0,
            }
        };
        let at = self.clock.now();
        let report_to: Vec<String> = reply_to.into_iter().collect();
        let header = WorkflowHeader {
            generation,
            workflow: workflow.clone(),
            method: method.clone(),
            input: input.clone(),
            started_at: at,
            parent: parent.clone(),
        };
        let failed = |reason: String, outcome: StepOutcome| {
            let failed = protocol::failed_start(
                &id,
                expected_version,
                header.clone(),
                reason,
                outcome,
                consumed.clone(),
                report_to.clone(),
            );
            Effect::transition(failed)
        };
        let Some(definition) = self.definitions.get(&workflow).cloned() else {
            let reason = format!("no workflow named `{workflow}` is registered on this worker");
            return Ok(failed(reason.clone(), StepOutcome::Unknown { reason }));
        };
        let started = WorkflowInstance::start_with_limits(
            &*definition,
            Start {
                workflow_id: id.clone(),
                generation,
                run: MethodRun(0),
                method: &method,
                input: &input,
                at,
            },
            self.limits,
        );
        let (instance, progress) = match started {
            Ok(started) => started,
            Err(error) => return Ok(failed(error.to_string(), error.into())),
        };
        let mut live = Live {
            instance,
            version: expected_version,
            generation,
            workflow,
            parent,
            report_to: report_to.clone(),
        };
        let append = scheduled(&progress.commands);
        let mut transition = live.transition(
            &id,
            Some(header),
            append,
            &progress.commands,
            &progress.status,
            (consumed, at),
        );
        transition.report_to = (!report_to.is_empty()).then_some(report_to);
        self.cache.keep(id, live, &progress.status);
        Ok(Effect::transition(self.run_tasks_here(transition)))
    }
}

/// What a start message asks for.
pub(super) struct StartRequest {
    /// The instance to start.
    pub(super) id: WorkflowId,
    /// Which use of that id it is.
    pub(super) generation: Generation,
    /// Its workflow's name.
    pub(super) workflow: String,
    /// The method to run.
    pub(super) method: String,
    /// The encoded arguments.
    pub(super) input: Vec<u8>,
    /// The parent step waiting for it, for a child workflow.
    pub(super) parent: Option<ParentStep>,
    /// The response topic of the client that started it over a broker.
    pub(super) reply_to: Option<String>,
}
