//! The service worker: runs tasks with a timeout, retries by policy, and reports each task's
//! final outcome to the workflow that waits for it: in memory when that workflow's worker runs
//! in this process, through the store otherwise.

use super::{
    lease_loop, stopped, warn_throttled, WorkReceiver, WorkSender, WorkerConfig, WorkflowInput,
};
use crate::protocol;
use crate::store::{Consumed, Delivery, DeliveryId, Outgoing, Settlement, Transport};
use crate::topics;
use infinitic_core::message::{decode_message_within, Message};
use infinitic_core::task::{TaskInfo, WithTask};
use infinitic_core::{CommandId, Limits, Payload, Service, StepOutcome, Timestamp};
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
#[derive(Debug)]
pub(crate) enum TaskEnd {
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

/// A task message, decoded: what to run and whom to tell.
#[derive(Debug)]
pub(crate) struct Task {
    /// The task message: consumed by the transition that applies the outcome.
    consumed: Consumed,
    /// The command it carries out (the task id a service sees).
    task: CommandId,
    /// The workflow (by name) that issued it.
    workflow: String,
    /// The service called.
    pub(crate) service: String,
    /// The method called.
    pub(crate) method: String,
    args: Payload,
    /// Counted from 1; it travels in the message (a broker need not count redeliveries), so
    /// a message delivered again after a crash runs the same attempt again.
    attempt: u32,
}

/// Decodes a task message; `Err` is why it is not one (it is dead-lettered with that
/// reason).
pub(crate) fn decode(delivery: &Delivery, limits: &Limits) -> Result<Task, String> {
    let message = decode_message_within(&delivery.payload, limits)
        .map_err(|error| format!("undecodable task message: {error}"))?;
    let consumed = Consumed {
        message: message.id(),
        delivery: delivery.id,
    };
    match message {
        Message::ExecuteTask {
            task,
            workflow,
            service,
            method,
            args,
            attempt,
        } => Ok(Task {
            consumed,
            task,
            workflow,
            service,
            method,
            args,
            attempt: attempt.max(1),
        }),
        message => Err(format!(
            "not a task message on {}: {message:?}",
            delivery.topic
        )),
    }
}

impl Task {
    /// The end that tells the workflow `outcome` (and dead-letters the message with
    /// `dead_letter`, if set).
    pub(crate) fn reply(
        &self,
        outcome: StepOutcome,
        at: Timestamp,
        dead_letter: Option<String>,
    ) -> TaskEnd {
        TaskEnd::Reply {
            task: self.consumed.clone(),
            workflow: self.workflow.clone(),
            command: self.task.clone(),
            outcome,
            at,
            dead_letter,
        }
    }

    /// Runs this attempt on `services` and decides what follows: the outcome for the
    /// workflow, or the next attempt after the retry policy's delay.
    pub(crate) async fn run(
        self,
        services: &BTreeMap<String, Arc<dyn Service>>,
        config: &WorkerConfig,
    ) -> TaskEnd {
        let Task {
            ref service,
            ref method,
            attempt,
            ..
        } = self;
        let Some(implementation) = services.get(service) else {
            let reason = format!("no service named `{service}` is registered on this worker");
            let outcome = StepOutcome::Unknown {
                reason: reason.clone(),
            };
            return self.reply(outcome, config.clock.now(), Some(reason));
        };
        // Checked before the dispatcher decodes them: never retried, it cannot get better.
        if let Err(error) = config.limits.check(&self.args) {
            let reason = format!("arguments of {service}::{method} refused: {error}");
            let outcome = StepOutcome::Invalid {
                reason: reason.clone(),
            };
            return self.reply(outcome, config.clock.now(), Some(reason));
        }
        let info = TaskInfo {
            id: self.task.clone(),
            attempt,
        };
        let call = WithTask::new(info, implementation.dispatch(method, &self.args))
            .with_limits(config.limits);
        let result = match tokio::time::timeout(config.task_timeout, call).await {
            Ok(result) => result.map_err(Some),
            Err(_elapsed) => Err(None),
        };
        let now = config.clock.now();
        let final_failure = match result {
            Ok(value) => return self.reply(StepOutcome::Completed(value), now, None),
            // Never retried: a message that cannot be served is set aside, and the workflow
            // told.
            Err(Some(error)) if !error.is_retryable() => {
                let reason = match &error {
                    infinitic_core::TaskError::BadResult { reason } => {
                        format!("result of {service}::{method} cannot be encoded: {reason}")
                    }
                    other => other.to_string(),
                };
                return self.reply(error.into_outcome(attempt), now, Some(reason));
            }
            Err(Some(error)) => error.into_outcome(attempt),
            Err(None) => StepOutcome::TimedOut { attempts: attempt },
        };
        match config
            .retry
            .delay_after(attempt, retry_jitter(&self.task, attempt))
        {
            Some(delay) => {
                tracing::info!(
                    error = %failure(&final_failure),
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "task attempt failed, retrying"
                );
                let next = protocol::task(
                    &self.workflow,
                    self.task,
                    service,
                    method,
                    self.args.clone(),
                    attempt + 1,
                    now + delay,
                );
                TaskEnd::Retry {
                    delivery: self.consumed.delivery,
                    next,
                }
            }
            None => {
                // The workflow receives the failure as a value: not a problem of the worker.
                tracing::info!(
                    error = %failure(&final_failure),
                    "task attempt failed, no retry left"
                );
                self.reply(final_failure, now, None)
            }
        }
    }
}

async fn execute(
    services: &BTreeMap<String, Arc<dyn Service>>,
    config: &WorkerConfig,
    delivery: Delivery,
) -> TaskEnd {
    let task = match decode(&delivery, &config.limits) {
        Ok(task) => task,
        Err(reason) => {
            return TaskEnd::DeadLetter {
                delivery: delivery.id,
                reason,
            }
        }
    };
    let span = tracing::Span::current();
    span.record("service", task.service.as_str());
    span.record("method", task.method.as_str());
    span.record("task", field::display(&task.task));
    task.run(services, config).await
}

/// A number in `[0, 1)` for a retry's jitter, drawn from the task's id and attempt: retries
/// of different tasks spread apart, yet one task waits the same on every deployment and in
/// the tester (no hidden randomness to make a test flaky).
fn retry_jitter(task: &CommandId, attempt: u32) -> f64 {
    // FNV-1a then a 64-bit finaliser: stable across builds and platforms, unlike std's
    // hashers, and with well-mixed high bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in task.to_string().bytes().chain(attempt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Delivers a task's end: in memory to a local workflow worker (which removes the task message
/// in the commit that applies the outcome), or through the store.
pub(crate) async fn report<T: Transport>(
    transport: &T,
    local: Option<&LocalWorkflows>,
    end: TaskEnd,
) {
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
