//! The service worker: leases tasks, runs them with a timeout, retries by policy, and reports
//! each task's final outcome to the workflow that waits for it.

use super::{jitter_random, WorkerConfig};
use crate::store::{now, Delivery, Outgoing, Settlement, Transport};
use crate::topics;
use infinitic_core::message::{decode_message, encode_message, Message};
use infinitic_core::task::{TaskInfo, WithTask};
use infinitic_core::{CommandId, DispatchError, Service, StepOutcome, TaskError};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub(super) async fn run<T: Transport>(
    transport: T,
    services: BTreeMap<String, Arc<dyn Service>>,
    config: WorkerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let transport = Arc::new(transport);
    let services = Arc::new(services);
    let topics: Vec<String> = services.keys().map(|s| topics::service(s)).collect();
    let slots = Arc::new(Semaphore::new(config.service_concurrency.max(1)));
    // A task not settled within its lease is delivered again: give it time to time out first.
    let lease = config.task_timeout + config.task_lease_margin;
    let mut running = JoinSet::new();
    let mut activity = transport.activity();
    while !*stop.borrow() {
        while running.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let received = match transport.receive(&topics, free, lease).await {
            Ok(received) => received,
            Err(error) => {
                eprintln!("infinitic service worker: cannot receive tasks: {error}");
                tokio::time::sleep(config.poll_interval).await;
                continue;
            }
        };
        if received.deliveries.is_empty() {
            let wait = received.next_visible_at.map_or(config.poll_interval, |t| {
                t.saturating_duration_since(now()).min(config.poll_interval)
            });
            tokio::select! {
                _ = activity.wait(wait) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        for delivery in received.deliveries {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let transport = Arc::clone(&transport);
            let services = Arc::clone(&services);
            let config = config.clone();
            running.spawn(async move {
                let settlement = handle(&services, &config, delivery).await;
                if let Err(error) = transport.settle(vec![settlement]).await {
                    // The lease expires and the task is delivered again.
                    eprintln!("infinitic service worker: cannot settle a task: {error}");
                }
                drop(permit);
            });
        }
    }
    // Graceful shutdown: in-flight tasks finish and settle.
    while running.join_next().await.is_some() {}
}

async fn handle(
    services: &BTreeMap<String, Arc<dyn Service>>,
    config: &WorkerConfig,
    delivery: Delivery,
) -> Settlement {
    let message = match decode_message(&delivery.payload) {
        Ok(message) => message,
        Err(error) => {
            return Settlement::DeadLetter {
                delivery: delivery.id,
                reason: format!("undecodable task message: {error}"),
                publish: Vec::new(),
            }
        }
    };
    let Message::ExecuteTask {
        task,
        workflow,
        service,
        method,
        args,
        ..
    } = message
    else {
        return Settlement::DeadLetter {
            delivery: delivery.id,
            reason: format!("not a task message on {}: {message:?}", delivery.topic),
            publish: Vec::new(),
        };
    };
    let reply = |outcome: StepOutcome| vec![completion(&workflow, &task, outcome)];
    let Some(implementation) = services.get(&service) else {
        let reason = format!("no service named `{service}` is registered on this worker");
        return Settlement::DeadLetter {
            delivery: delivery.id,
            publish: reply(StepOutcome::Unknown {
                reason: reason.clone(),
            }),
            reason,
        };
    };
    let attempt = delivery.attempt;
    let info = TaskInfo {
        id: task.clone(),
        attempt,
    };
    let call = WithTask::new(info, implementation.dispatch(&method, &args));
    let result = match tokio::time::timeout(config.task_timeout, call).await {
        Ok(result) => result.map_err(Some),
        Err(_elapsed) => Err(None),
    };
    let final_failure = match result {
        Ok(value) => {
            return Settlement::Ack {
                delivery: delivery.id,
                publish: reply(StepOutcome::Completed(value)),
            }
        }
        // Never retried: a message that cannot be served is set aside, and the workflow told.
        Err(Some(TaskError::Dispatch(error))) => {
            let outcome = match &error {
                DispatchError::UnknownMethod { .. } => StepOutcome::Unknown {
                    reason: error.to_string(),
                },
                DispatchError::BadArguments { .. } => StepOutcome::Invalid {
                    reason: error.to_string(),
                },
            };
            return Settlement::DeadLetter {
                delivery: delivery.id,
                reason: error.to_string(),
                publish: reply(outcome),
            };
        }
        Err(Some(TaskError::BadResult { reason })) => {
            return Settlement::DeadLetter {
                delivery: delivery.id,
                reason: format!("result of {service}::{method} cannot be encoded: {reason}"),
                publish: reply(StepOutcome::Invalid { reason }),
            };
        }
        Err(Some(TaskError::Failed { error, message })) => StepOutcome::Failed {
            error,
            message,
            attempts: attempt,
        },
        Err(Some(TaskError::Panicked { message })) => StepOutcome::Panicked {
            message,
            attempts: attempt,
        },
        Err(None) => StepOutcome::TimedOut { attempts: attempt },
    };
    match config.retry.delay_after(attempt, jitter_random()) {
        Some(delay) => Settlement::Retry {
            delivery: delivery.id,
            at: now() + delay,
        },
        None => Settlement::Ack {
            delivery: delivery.id,
            publish: reply(final_failure),
        },
    }
}

/// The message that tells a workflow how its command ended.
pub(crate) fn completion(workflow: &str, command: &CommandId, outcome: StepOutcome) -> Outgoing {
    let at = now();
    Outgoing {
        topic: topics::workflow(workflow),
        key: command.workflow.to_string(),
        payload: encode_message(&Message::CommandCompleted {
            command: command.clone(),
            outcome,
            at,
        }),
        deliver_at: at,
    }
}
