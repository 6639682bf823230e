//! The one place where the runtime builds what it sends and what it stores: every
//! [`Outgoing`] message (its topic, key, envelope and due time) and every [`Transition`] of an
//! instance. Workers and the client decide *what* happens; this module says how it looks on
//! the wire and in the store, so a second backend or a new message changes one file.

use crate::store::{Consumed, Outgoing, Transition, WorkflowHeader, WorkflowState};
use crate::topics;
use infinitic_core::message::{Message, ParentStep};
use infinitic_core::{
    encode, Command, CommandId, HistoryEvent, Payload, StepOutcome, Timestamp, WorkflowId,
};
use serde::{Deserialize, Serialize};

/// Tells the workflow named `workflow` that `command` ended with `outcome` at `at`; delivered
/// from `deliver_at` (later than `at` when the event is held back).
pub(crate) fn completion(
    workflow: &str,
    command: &CommandId,
    outcome: StepOutcome,
    at: Timestamp,
    deliver_at: Timestamp,
) -> Outgoing {
    let key = command.workflow.to_string();
    let message = Message::command_completed(command.clone(), outcome, at);
    Outgoing::new(
        topics::workflow(workflow),
        key,
        message.encode(),
        deliver_at,
    )
}

/// The message that carries out `command` (its id `command_id`), issued at `at` by an instance
/// of the workflow named `workflow`: a task for a service, a durable timer (a completion
/// delivered at its time), or the start of a child workflow. `None` for an inline step,
/// complete as recorded.
pub(crate) fn command(
    workflow: &str,
    command_id: CommandId,
    command: &Command,
    at: Timestamp,
) -> Option<Outgoing> {
    Some(match command {
        Command::CallService {
            service,
            method,
            args,
        } => task(workflow, command_id, service, method, args.clone(), 1, at),
        Command::StartTimer { fire_at } => {
            let fired = StepOutcome::Completed(encode(&()).unwrap_or_default());
            let key = command_id.workflow.to_string();
            let message = Message::command_completed(command_id, fired, *fire_at);
            // Marked, so a state store keeps it as the timer's record until it is consumed.
            let id = message.id();
            Outgoing::new(topics::workflow(workflow), key, message.encode(), *fire_at).as_timer(id)
        }
        Command::StartChild {
            workflow: child_workflow,
            method,
            args,
        } => {
            let child = WorkflowId::new(command_id.to_string());
            let parent = ParentStep {
                workflow: workflow.to_string(),
                command: command_id,
            };
            let message = Message::start_workflow(
                child.clone(),
                child_workflow.as_ref(),
                method.as_ref(),
                args.clone(),
                Some(parent),
                false,
            );
            Outgoing::new(
                topics::workflow(child_workflow),
                child.to_string(),
                message.encode(),
                at,
            )
        }
        Command::SendSignal {
            workflow: target,
            instance,
            channel,
            value,
        } => {
            // Named after the command: a send replayed or relayed again is the same signal.
            let id = command_id.to_string();
            signal(
                target,
                &WorkflowId::new(instance.as_str()),
                channel,
                value.clone(),
                &id,
                at,
            )
        }
        // Complete as recorded: nothing to send.
        Command::Inline { .. } | Command::Receive { .. } => return None,
    })
}

/// A signal for channel `channel` of instance `instance` (a workflow named `workflow`), named
/// `id` by its sender.
pub(crate) fn signal(
    workflow: &str,
    instance: &WorkflowId,
    channel: &str,
    value: Payload,
    id: &str,
    at: Timestamp,
) -> Outgoing {
    let message = Message::signal(instance.clone(), channel, value, id);
    Outgoing::new(
        topics::workflow(workflow),
        instance.to_string(),
        message.encode(),
        at,
    )
}

/// Attempt `attempt` of the task `task`, a service call of the workflow named `workflow`.
pub(crate) fn task(
    workflow: &str,
    task: CommandId,
    service: &str,
    method: &str,
    args: Payload,
    attempt: u32,
    at: Timestamp,
) -> Outgoing {
    let key = task.to_string();
    let message = Message::execute_task(task, workflow, service, method, args, attempt);
    Outgoing::new(topics::service(service), key, message.encode(), at)
}

/// A client's start of `header`'s method on instance `id`: the instance stored as pending
/// (created, version 1) with its start message, in one transition.
pub(crate) fn start_pending(id: &WorkflowId, header: WorkflowHeader) -> Transition {
    let message = Message::start_workflow(
        id.clone(),
        header.workflow.clone(),
        header.method.clone(),
        header.input.clone(),
        None,
        true,
    );
    let start = Outgoing::new(
        topics::workflow(&header.workflow),
        id.to_string(),
        message.encode(),
        header.started_at,
    );
    Transition {
        workflow_id: id.clone(),
        expected_version: 0,
        header: Some(header),
        state: WorkflowState::Pending,
        append: Vec::new(),
        outbox: vec![start],
        consumed: None,
        dead_letter: None,
        report_to: None,
    }
}

/// A client's start of `header`'s method on instance `id` over a broker: nothing stored; the
/// instance, created by the worker that takes this message, reports how it ended to the
/// client's response topic `reply_to`.
pub(crate) fn start_over_broker(
    id: &WorkflowId,
    header: &WorkflowHeader,
    reply_to: &str,
) -> Outgoing {
    let message = Message::StartWorkflow {
        workflow_id: id.clone(),
        generation: header.generation,
        workflow: header.workflow.clone(),
        method: header.method.clone(),
        input: header.input.clone(),
        parent: None,
        pending: false,
        reply_to: Some(reply_to.to_string()),
    };
    Outgoing::new(
        topics::workflow(&header.workflow),
        id.to_string(),
        message.encode(),
        header.started_at,
    )
}

/// A client's request that instance `id` (a workflow named `workflow`) report how it ended to
/// the response topic `reply_to`.
pub(crate) fn wait_for_result(
    workflow: &str,
    id: &WorkflowId,
    reply_to: &str,
    at: Timestamp,
) -> Outgoing {
    let message = Message::wait_for_result(id.clone(), reply_to);
    Outgoing::new(
        topics::workflow(workflow),
        id.to_string(),
        message.encode(),
        at,
    )
}

/// What an instance tells a client's response topic: how it ended, or that there is no such
/// instance. Plain MessagePack: only clients read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Response {
    /// The instance.
    pub(crate) workflow_id: WorkflowId,
    /// Its final state (completed, failed, parked); `None`: no such instance.
    pub(crate) state: Option<WorkflowState>,
}

/// Tells each of `report_to` that instance `id` is now in `state` (a final state), at `at`.
pub(crate) fn responses(
    report_to: &[String],
    id: &WorkflowId,
    state: Option<&WorkflowState>,
    at: Timestamp,
) -> Vec<Outgoing> {
    let response = Response {
        workflow_id: id.clone(),
        state: state.cloned(),
    };
    // A state encodes (it holds bytes and text); an empty response still wakes the client.
    let payload = encode(&response).unwrap_or_default();
    report_to
        .iter()
        .map(|topic| Outgoing::new(topic.clone(), id.to_string(), payload.clone(), at))
        .collect()
}

/// One step of instance `id` from `version`: appends `append`, publishes `outbox`, consumes
/// `consumed`; `header` when the step starts the instance.
pub(crate) fn step(
    id: &WorkflowId,
    version: u64,
    header: Option<WorkflowHeader>,
    state: WorkflowState,
    append: Vec<HistoryEvent>,
    outbox: Vec<Outgoing>,
    consumed: Consumed,
) -> Transition {
    Transition {
        workflow_id: id.clone(),
        expected_version: version,
        header,
        state,
        append,
        outbox,
        consumed: Some(consumed),
        dead_letter: None,
        report_to: None,
    }
}

/// Instance `id` could not start (unknown workflow or method, undecodable arguments): stored
/// as failed with `reason`, its start message dead-lettered with the same reason, and a
/// waiting parent told `outcome`.
pub(crate) fn failed_start(
    id: &WorkflowId,
    version: u64,
    header: WorkflowHeader,
    reason: String,
    outcome: StepOutcome,
    consumed: Consumed,
    report_to: Vec<String>,
) -> Transition {
    let state = WorkflowState::Failed(reason.clone());
    let mut outbox: Vec<Outgoing> = header
        .parent
        .iter()
        .map(|p| {
            completion(
                &p.workflow,
                &p.command,
                outcome.clone(),
                header.started_at,
                header.started_at,
            )
        })
        .collect();
    outbox.extend(responses(&report_to, id, Some(&state), header.started_at));
    Transition {
        workflow_id: id.clone(),
        expected_version: version,
        header: Some(header),
        state,
        append: Vec::new(),
        outbox,
        consumed: Some(consumed),
        dead_letter: Some(reason),
        report_to: (!report_to.is_empty()).then_some(report_to),
    }
}

/// Parks instance `id` at `version` with `reason`, consuming nothing: the event that found it
/// unable to go on waits for a fix. The clients of `report_to` are told.
pub(crate) fn park(
    id: &WorkflowId,
    version: u64,
    reason: &str,
    report_to: &[String],
    at: Timestamp,
) -> Transition {
    let state = WorkflowState::Parked(reason.to_string());
    Transition {
        workflow_id: id.clone(),
        expected_version: version,
        header: None,
        outbox: responses(report_to, id, Some(&state), at),
        state,
        append: Vec::new(),
        consumed: None,
        dead_letter: None,
        report_to: None,
    }
}
