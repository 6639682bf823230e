//! The service worker: runs tasks with a timeout, retries by policy, and reports each task's
//! final outcome to the workflow that waits for it: in memory when that workflow's worker runs
//! in this process, through the store otherwise.

use super::{
    jitter_random, lease_loop, stopped, warn_throttled, WorkReceiver, WorkSender, WorkerConfig,
    WorkflowInput,
};
use crate::protocol;
use crate::store::{Consumed, Delivery, DeliveryId, Outgoing, Settlement, Transport};
use crate::topics;
use infinitic_core::message::{decode_message_within, Message};
use infinitic_core::task::{TaskInfo, WithTask};
use infinitic_core::{CommandId, Service, StepOutcome, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{field, Instrument};

/// Workflows hosted by this process, and where their events go.
pub(super) type LocalWorkflows = (BTreeSet<String>, WorkSender<WorkflowInput>);

pub(super) async fn run<T: Transport>(
    transport: Arc<T>,
    services: BTreeMap<String, Arc<dyn Service>>,
    config: WorkerConfig,
    mut stop: watch::Receiver<bool>,
    (sender, mut tasks): (WorkSender<Delivery>, WorkReceiver<Delivery>),
    local: Option<LocalWorkflows>,
) {
    let services = Arc::new(services);
    let local = Arc::new(local);
    let slots = Arc::new(Semaphore::new(config.service_concurrency.max(1)));
    // Tasks published through the store (by other processes, retries, redeliveries after a
    // crash), leased while there is room to run them. A task not settled within its lease is
    // delivered again: the lease leaves it time to time out first.
    let room_slots = Arc::clone(&slots);
    let receiver = tokio::spawn(lease_loop(
        Arc::clone(&transport),
        services.keys().map(|s| topics::service(s)).collect(),
        config.task_timeout + config.task_lease_margin,
        config.poll_interval,
        Arc::clone(&config.clock),
        stop.clone(),
        sender,
        move |sender| {
            room_slots
                .available_permits()
                .saturating_sub(sender.queued())
        },
        |delivery| delivery,
    ));
    let mut running = JoinSet::new();
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            n = tasks.recv_many(&mut batch, 64) => if n == 0 { break },
        }
        for delivery in batch.drain(..) {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let (transport, services, local, config) = (
                Arc::clone(&transport),
                Arc::clone(&services),
                Arc::clone(&local),
                config.clone(),
            );
            // One span per attempt; `execute` fills in what the message says.
            let span = tracing::error_span!(
                "task",
                service = field::Empty,
                method = field::Empty,
                task = field::Empty,
                attempt = delivery.attempt,
            );
            running.spawn(
                async move {
                    let end = execute(&services, &config, delivery).await;
                    end.log();
                    report(&*transport, local.as_ref().as_ref(), end).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        while running.try_join_next().is_some() {}
    }
    // Graceful shutdown: tasks handed over but not started go back to the queue at once,
    // tasks in flight finish and report.
    let _ = receiver.await;
    let mut back = Vec::new();
    while let Some(delivery) = tasks.try_recv() {
        back.push(Settlement::Retry {
            delivery: delivery.id,
            at: config.clock.now(),
        });
    }
    if let Err(error) = transport.settle(back).await {
        tracing::warn!(%error, "cannot release unstarted tasks (their leases bring them back)");
    }
    while running.join_next().await.is_some() {}
}

/// How one attempt ended, and what to do about it.
enum TaskEnd {
    /// Tell the workflow; also dead-letter the task message when `dead_letter` is set.
    Reply {
        /// The task message: consumed by the transition that applies the outcome.
        task: Consumed,
        workflow: String,
        command: CommandId,
        outcome: StepOutcome,
        /// When the task ended.
        at: Timestamp,
        dead_letter: Option<String>,
    },
    /// Run it again later: the next attempt is a new message, due after the backoff.
    Retry {
        delivery: DeliveryId,
        next: Outgoing,
    },
    /// Unreadable: nobody to tell.
    DeadLetter {
        delivery: DeliveryId,
        reason: String,
    },
}

impl TaskEnd {
    /// Logs a dead letter (retries and final failures are logged where they are decided).
    fn log(&self) {
        match self {
            TaskEnd::Reply {
                dead_letter: Some(reason),
                ..
            }
            | TaskEnd::DeadLetter { reason, .. } => {
                tracing::warn!(%reason, "task message dead-lettered");
            }
            _ => {}
        }
    }
}

/// A failed attempt, in a few words, for the logs.
fn failure(outcome: &StepOutcome) -> String {
    match outcome {
        StepOutcome::Failed { message, .. } => message.clone(),
        StepOutcome::Panicked { message, .. } => format!("panicked: {message}"),
        StepOutcome::TimedOut { .. } => "timed out".to_string(),
        other => format!("{other:?}"),
    }
}

async fn execute(
    services: &BTreeMap<String, Arc<dyn Service>>,
    config: &WorkerConfig,
    delivery: Delivery,
) -> TaskEnd {
    let message = match decode_message_within(&delivery.payload, &config.limits) {
        Ok(message) => message,
        Err(error) => {
            return TaskEnd::DeadLetter {
                delivery: delivery.id,
                reason: format!("undecodable task message: {error}"),
            }
        }
    };
    let consumed = Consumed {
        message: message.id(),
        delivery: delivery.id,
    };
    let Message::ExecuteTask {
        task,
        workflow,
        service,
        method,
        args,
        attempt,
    } = message
    else {
        return TaskEnd::DeadLetter {
            delivery: delivery.id,
            reason: format!("not a task message on {}: {message:?}", delivery.topic),
        };
    };
    let span = tracing::Span::current();
    span.record("service", service.as_str());
    span.record("method", method.as_str());
    span.record("task", field::display(&task));
    let reply = |outcome: StepOutcome, dead_letter: Option<String>| TaskEnd::Reply {
        task: consumed.clone(),
        workflow: workflow.clone(),
        command: task.clone(),
        outcome,
        at: config.clock.now(),
        dead_letter,
    };
    let Some(implementation) = services.get(&service) else {
        let reason = format!("no service named `{service}` is registered on this worker");
        return reply(
            StepOutcome::Unknown {
                reason: reason.clone(),
            },
            Some(reason),
        );
    };
    // Checked before the dispatcher decodes them: never retried, it cannot get better.
    if let Err(error) = config.limits.check(&args) {
        let reason = format!("arguments of {service}::{method} refused: {error}");
        return reply(
            StepOutcome::Invalid {
                reason: reason.clone(),
            },
            Some(reason),
        );
    }
    // The attempt travels in the message (a broker need not count redeliveries); a message
    // delivered again after a crash runs the same attempt again.
    let attempt = attempt.max(1);
    let info = TaskInfo {
        id: task.clone(),
        attempt,
    };
    let call =
        WithTask::new(info, implementation.dispatch(&method, &args)).with_limits(config.limits);
    let result = match tokio::time::timeout(config.task_timeout, call).await {
        Ok(result) => result.map_err(Some),
        Err(_elapsed) => Err(None),
    };
    let final_failure = match result {
        Ok(value) => return reply(StepOutcome::Completed(value), None),
        // Never retried: a message that cannot be served is set aside, and the workflow told.
        Err(Some(error)) if !error.is_retryable() => {
            let reason = match &error {
                infinitic_core::TaskError::BadResult { reason } => {
                    format!("result of {service}::{method} cannot be encoded: {reason}")
                }
                other => other.to_string(),
            };
            return reply(error.into_outcome(attempt), Some(reason));
        }
        Err(Some(error)) => error.into_outcome(attempt),
        Err(None) => StepOutcome::TimedOut { attempts: attempt },
    };
    match config.retry.delay_after(attempt, jitter_random()) {
        Some(delay) => {
            tracing::info!(
                error = %failure(&final_failure),
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "task attempt failed, retrying"
            );
            let due = config.clock.now() + delay;
            let next = protocol::task(&workflow, task, &service, &method, args, attempt + 1, due);
            TaskEnd::Retry {
                delivery: delivery.id,
                next,
            }
        }
        None => {
            // The workflow receives the failure as a value: not a problem of the worker.
            tracing::info!(
                error = %failure(&final_failure),
                "task attempt failed, no retry left"
            );
            reply(final_failure, None)
        }
    }
}

/// Delivers a task's end: in memory to a local workflow worker (which removes the task message
/// in the commit that applies the outcome), or through the store.
async fn report<T: Transport>(transport: &T, local: Option<&LocalWorkflows>, end: TaskEnd) {
    let settlement = match end {
        TaskEnd::Reply {
            task,
            workflow,
            command,
            outcome,
            at,
            dead_letter: None,
        } => {
            let delivery = task.delivery;
            if let Some((_, sender)) = local.filter(|(names, _)| names.contains(&workflow)) {
                let input = WorkflowInput::TaskDone {
                    task,
                    workflow: workflow.clone(),
                    command,
                    outcome,
                    at,
                };
                match sender.send(input) {
                    Ok(()) => return,
                    // The workflow worker has stopped: go through the store.
                    Err(WorkflowInput::TaskDone {
                        command, outcome, ..
                    }) => Settlement::Ack {
                        delivery,
                        publish: vec![protocol::completion(&workflow, &command, outcome, at, at)],
                    },
                    Err(WorkflowInput::Event(_)) => unreachable!("sent a TaskDone"),
                }
            } else {
                Settlement::Ack {
                    delivery,
                    publish: vec![protocol::completion(&workflow, &command, outcome, at, at)],
                }
            }
        }
        TaskEnd::Reply {
            task,
            workflow,
            command,
            outcome,
            at,
            dead_letter: Some(reason),
        } => Settlement::DeadLetter {
            delivery: task.delivery,
            reason,
            publish: vec![protocol::completion(&workflow, &command, outcome, at, at)],
        },
        TaskEnd::Retry { delivery, next } => Settlement::Ack {
            delivery,
            publish: vec![next],
        },
        TaskEnd::DeadLetter { delivery, reason } => Settlement::DeadLetter {
            delivery,
            reason,
            publish: Vec::new(),
        },
    };
    if let Err(error) = transport.settle(vec![settlement]).await {
        warn_throttled(&format!("task settle: {}", error.kind()), || {
            format!("cannot settle a task (its lease brings it back): {error}")
        });
    }
}
