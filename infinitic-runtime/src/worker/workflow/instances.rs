//! Turning one input into an instance's next transition: start it, apply an outcome to its
//! live future (sticky execution) or rebuild it from history first, and build what the step
//! sends and stores.

use super::not_applied::{held_early, refuse, warn_later, NotApplied};
use super::parked::{keep_for_parked, Parked};
use super::rebuild::Rebuilt;
use super::signals::IncomingSignal;
use super::start::StartRequest;
use super::{Batch, HOLD_BASE};
use crate::clock::Clock;
use crate::protocol;
use crate::store::Consumed;
use crate::store::{
    DeliveryId, Outgoing, Settlement, StateStore, Transition, WorkflowHeader, WorkflowState,
};
use crate::topics;
use crate::worker::cache::{Cache, CacheCounters};
use crate::worker::{backoff, WorkerConfig, WorkflowInput};
use infinitic_core::message::{decode_message_within, Message, ParentStep};
use infinitic_core::{
    Applied, CommandId, CommandRecord, Completion, Generation, HistoryEvent, Limits, MethodRun,
    RejectedEvent, Status, StepOutcome, Timestamp, WorkflowDefinition, WorkflowId,
    WorkflowInstance,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The instances this worker runs: their code, the live ones, and where their tasks go.
pub(super) struct Instances {
    pub(super) definitions: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    pub(super) cache: Cache<WorkflowId, Live>,
    /// Services of this process: their tasks are handed over in memory after the commit.
    pub(super) local_services: BTreeSet<String>,
    pub(super) task_lease: Duration,
    pub(super) limits: Limits,
    /// What "now" is.
    pub(super) clock: Arc<dyn Clock>,
}

/// A live instance and the stored version it corresponds to.
pub(super) struct Live {
    pub(super) instance: WorkflowInstance,
    pub(super) version: u64,
    /// Which use of the instance's id this is: completions of another generation's commands
    /// are not for it.
    pub(super) generation: Generation,
    pub(super) workflow: String,
    pub(super) parent: Option<ParentStep>,
    /// Clients' response topics, told how the instance ended.
    pub(super) report_to: Vec<String>,
}

impl Instances {
    /// Instances of `definitions`, cached up to the configured capacity; tasks for
    /// `local_services` are handed over in memory.
    pub(super) fn new(
        definitions: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
        config: &WorkerConfig,
        local_services: BTreeSet<String>,
        counters: Arc<CacheCounters>,
    ) -> Self {
        Self {
            definitions,
            cache: Cache::new(config.cache_capacity, counters),
            local_services,
            task_lease: config.task_timeout + config.task_lease_margin,
            limits: config.limits,
            clock: Arc::clone(&config.clock),
        }
    }

    pub(super) async fn handle<S: StateStore>(
        &mut self,
        store: &S,
        input: WorkflowInput,
        batch: &mut Batch,
    ) {
        match input {
            WorkflowInput::TaskDone {
                task,
                workflow,
                command,
                outcome,
                at,
            } => {
                let delivery = task.delivery;
                let dead_letter = |reason| Settlement::DeadLetter {
                    delivery,
                    reason,
                    publish: Vec::new(),
                };
                let settlement = match self.live_for(store, &command).await {
                    Ok(Found::Live(live, recovered, cached)) => {
                        let applied = self
                            .apply_completion(*live, recovered, cached, task, command, outcome, at);
                        match applied {
                            Ok(effect) => effect.settle(delivery, batch),
                            Err(Rejected::Never(reason)) => Some(dead_letter(reason)),
                            // Kept as an event on the store, tried again on the stored state.
                            Err(Rejected::Stale {
                                reason,
                                command,
                                outcome,
                            }) => {
                                warn_later(&command.workflow, &reason);
                                Some(self.keep_as_event(delivery, &workflow, &command, outcome, at))
                            }
                        }
                    }
                    Ok(Found::Done(effect)) => effect.settle(delivery, batch),
                    Ok(Found::Parked(parked)) => {
                        keep_for_parked(parked, task, command, outcome, at).settle(delivery, batch)
                    }
                    // The outcome is only in memory: keep it as an event on the store, with
                    // the task message's removal.
                    Err(NotApplied::Later { reason, park }) => {
                        warn_later(&command.workflow, &reason);
                        batch.transitions.extend(park.map(|t| *t));
                        Some(self.keep_as_event(delivery, &workflow, &command, outcome, at))
                    }
                    Err(NotApplied::Never(reason)) => Some(dead_letter(reason)),
                };
                batch.settlements.extend(settlement);
            }
            WorkflowInput::Event(delivery) => {
                let decoded = decode_message_within(&delivery.payload, &self.limits).map(|m| {
                    let consumed = Consumed {
                        message: m.id(),
                        delivery: delivery.id,
                    };
                    (consumed, m)
                });
                let message = decoded.as_ref().ok().map(|(_, m)| m);
                if let Some(hold) = held_early(message, &delivery, self.clock.now()) {
                    batch.settlements.push(hold);
                    return;
                }
                let (id, applied) = match decoded {
                    Err(error) => (
                        None,
                        Err(NotApplied::Never(format!(
                            "undecodable workflow message: {error}"
                        ))),
                    ),
                    Ok((
                        consumed,
                        Message::StartWorkflow {
                            workflow_id,
                            generation,
                            workflow,
                            method,
                            input,
                            parent,
                            pending,
                            reply_to,
                        },
                    )) => {
                        // On a redelivery, look the instance up: it may have started already.
                        let pending = pending && delivery.attempt == 1;
                        let start = StartRequest {
                            id: workflow_id.clone(),
                            generation,
                            workflow,
                            method,
                            input,
                            parent,
                            reply_to,
                        };
                        let started = self.start(store, consumed, pending, start).await;
                        (Some(workflow_id), started)
                    }
                    Ok((
                        consumed,
                        Message::CommandCompleted {
                            command,
                            outcome,
                            at,
                        },
                    )) => {
                        let id = command.workflow.clone();
                        let completed = match refuse(&outcome, &self.limits) {
                            None => self.complete(store, consumed, command, outcome, at).await,
                            // The workflow learns of it; the message goes to the dead letters.
                            Some(reason) => {
                                let invalid = StepOutcome::Invalid {
                                    reason: reason.clone(),
                                };
                                match self.complete(store, consumed, command, invalid, at).await {
                                    Ok(Effect::Transition(mut t)) => {
                                        t.dead_letter = Some(reason);
                                        Ok(Effect::Transition(t))
                                    }
                                    Ok(Effect::Ack | Effect::Reply(_)) => {
                                        Err(NotApplied::Never(reason))
                                    }
                                    Err(NotApplied::Never(error)) => {
                                        Err(NotApplied::Never(format!("{reason} ({error})")))
                                    }
                                    Err(later) => Err(later),
                                }
                            }
                        };
                        (Some(id), completed)
                    }
                    Ok((
                        consumed,
                        Message::SignalSent {
                            workflow_id,
                            channel,
                            value,
                            id,
                        },
                    )) => {
                        let signal = IncomingSignal { id, channel, value };
                        let applied = self.signal(store, consumed, &workflow_id, signal).await;
                        (Some(workflow_id), applied)
                    }
                    Ok((
                        consumed,
                        Message::WaitForResult {
                            workflow_id,
                            reply_to,
                        },
                    )) => {
                        let watched = self.watch(store, consumed, &workflow_id, reply_to).await;
                        (Some(workflow_id), watched)
                    }
                    Ok(other) => (
                        None,
                        Err(NotApplied::Never(format!(
                            "not a workflow event on {}: {other:?}",
                            delivery.topic
                        ))),
                    ),
                };
                let settlement = match applied {
                    Ok(effect) => effect.settle(delivery.id, batch),
                    // Never dead-lettered: delivered again, later and later.
                    Err(NotApplied::Later { reason, park }) => {
                        if let Some(id) = &id {
                            warn_later(id, &reason);
                        }
                        batch.transitions.extend(park.map(|t| *t));
                        Some(Settlement::Retry {
                            delivery: delivery.id,
                            at: self.clock.now() + backoff(HOLD_BASE, delivery.attempt),
                        })
                    }
                    Err(NotApplied::Never(reason)) => Some(Settlement::DeadLetter {
                        delivery: delivery.id,
                        reason,
                        publish: Vec::new(),
                    }),
                };
                batch.settlements.extend(settlement);
            }
        }
    }

    /// A task's outcome this worker cannot apply now, only held in memory: removes the task
    /// message and publishes the outcome as an event (delivered after a short hold), so it is
    /// applied later, on the stored state.
    fn keep_as_event(
        &self,
        task: DeliveryId,
        workflow: &str,
        command: &CommandId,
        outcome: StepOutcome,
        at: Timestamp,
    ) -> Settlement {
        let event =
            protocol::completion(workflow, command, outcome, at, self.clock.now() + HOLD_BASE);
        Settlement::Ack {
            delivery: task,
            publish: vec![event],
        }
    }

    /// Tasks for services of this process are handed over in memory after the commit.
    pub(super) fn run_tasks_here(&self, mut transition: Transition) -> Transition {
        for message in &mut transition.outbox {
            let local = message
                .topic
                .strip_prefix(topics::SERVICE_PREFIX)
                .is_some_and(|service| self.local_services.contains(service));
            if local {
                message.local_lease = Some(self.task_lease);
            }
        }
        transition
    }

    async fn complete<S: StateStore>(
        &mut self,
        store: &S,
        consumed: Consumed,
        command: CommandId,
        outcome: StepOutcome,
        at: infinitic_core::Timestamp,
    ) -> Result<Effect, NotApplied> {
        match self.live_for(store, &command).await? {
            Found::Live(live, recovered, cached) => self
                .apply_completion(*live, recovered, cached, consumed, command, outcome, at)
                .map_err(|rejected| match rejected {
                    Rejected::Never(reason) => NotApplied::Never(reason),
                    Rejected::Stale { reason, .. } => NotApplied::Later { reason, park: None },
                }),
            Found::Done(effect) => Ok(effect),
            Found::Parked(parked) => Ok(keep_for_parked(parked, consumed, command, outcome, at)),
        }
    }

    /// The live instance `command` belongs to: from the cache, or rebuilt from the store (with
    /// the commands replay issued past the end of its history). Fails before anything of the
    /// completion is used, so a caller holding the outcome in memory keeps it.
    async fn live_for<S: StateStore>(
        &mut self,
        store: &S,
        command: &CommandId,
    ) -> Result<Found, NotApplied> {
        let id = &command.workflow;
        let (live, recovered, cached) = match self.cache.take(id) {
            Some(live) => (live, Vec::new(), true),
            None => {
                let stored = store
                    .load(id, true)
                    .await
                    .map_err(|e| NotApplied::store(id, e))?
                    .ok_or_else(|| {
                        NotApplied::Never(format!("event for unknown workflow instance {id}"))
                    })?;
                if stored.header.generation != command.generation {
                    return Ok(Found::Done(other_generation(
                        command,
                        stored.header.generation,
                    )));
                }
                match self.rebuild(stored)? {
                    Rebuilt::Live(live, new_commands) => (*live, new_commands, false),
                    Rebuilt::Done(effect) => return Ok(Found::Done(effect)),
                    Rebuilt::Parked(parked) => return Ok(Found::Parked(parked)),
                }
            }
        };
        if command.generation != live.generation {
            let generation = live.generation;
            self.cache.put_back(id.clone(), live);
            return Ok(Found::Done(other_generation(command, generation)));
        }
        Ok(Found::Live(Box::new(live), recovered, cached))
    }

    /// Applies a completion to its live instance (`cached`: taken from the cache, not
    /// rebuilt from the store just now); `Err` is why the instance rejected it.
    #[allow(clippy::too_many_arguments)]
    fn apply_completion(
        &mut self,
        mut live: Live,
        recovered: Vec<CommandRecord>,
        cached: bool,
        consumed: Consumed,
        command: CommandId,
        outcome: StepOutcome,
        at: Timestamp,
    ) -> Result<Effect, Rejected> {
        let completion = Completion {
            run: command.run,
            position: command.position,
            at,
            outcome,
        };
        match live.instance.apply(completion.clone()) {
            // A cached instance may be behind the store: another worker moved the instance
            // on while this one held it (ownership moves when consumers come and go). The
            // store decides: drop the cached copy, and try again on the stored state.
            Err(RejectedEvent::UnknownCommand { .. }) if cached => {
                drop(live); // taken from the cache: not put back
                Err(Rejected::Stale {
                    reason: format!(
                        "the cached copy of workflow {} was behind the store; trying again on \
                         the stored state",
                        command.workflow
                    ),
                    command,
                    outcome: completion.outcome,
                })
            }
            Err(rejected) => {
                let reason = format!("rejected by workflow {}: {rejected}", command.workflow);
                self.cache.put_back(command.workflow, live);
                Err(Rejected::Never(reason))
            }
            Ok(Applied::Ignored(_)) => {
                self.cache.put_back(command.workflow, live);
                Ok(Effect::Ack)
            }
            Ok(Applied::Progressed(progress)) => {
                let id = command.workflow;
                let mut append = scheduled(&recovered);
                append.push(HistoryEvent::Completed(completion));
                append.extend(scheduled(&progress.commands));
                let mut commands = recovered;
                commands.extend(progress.commands);
                let now = self.clock.now();
                let transition = live.transition(
                    &id,
                    None,
                    append,
                    &commands,
                    &progress.status,
                    (consumed, now),
                );
                self.cache.keep(id, live, &progress.status);
                Ok(Effect::transition(self.run_tasks_here(transition)))
            }
        }
    }
}

/// A completion meant for another instance that had this id (an earlier one, above all):
/// never applied here, and not worth a dead letter either.
fn other_generation(command: &CommandId, generation: Generation) -> Effect {
    tracing::info!(
        command = %command,
        generation = generation.0,
        "completion of another generation of this instance ignored"
    );
    Effect::Ack
}

/// Why a live instance did not take a completion.
enum Rejected {
    /// It never will: the event is dead-lettered with this reason.
    Never(String),
    /// The cached copy was behind the store and is dropped: the completion is tried again
    /// on the stored state.
    Stale {
        reason: String,
        command: CommandId,
        outcome: StepOutcome,
    },
}

/// The instance a completion is for, or what to do with the completion instead.
enum Found {
    /// Live, with the commands a rebuild issued past the end of its history, and whether it
    /// came from the cache (rather than from the store just now).
    Live(Box<Live>, Vec<CommandRecord>, bool),
    /// Nothing to apply it to (a late event, another generation).
    Done(Effect),
    /// Parked: the completion is stored with it.
    Parked(Parked),
}

pub(super) enum Effect {
    Transition(Box<Transition>),
    Ack,
    /// Ack, publishing these with it (answers that change no instance).
    Reply(Vec<Outgoing>),
}

impl Effect {
    pub(super) fn transition(t: Transition) -> Self {
        Effect::Transition(Box::new(t))
    }

    /// Records the effect in `batch`; returns the settlement of `consumed` it needs, if any.
    fn settle(self, consumed: DeliveryId, batch: &mut Batch) -> Option<Settlement> {
        match self {
            Effect::Transition(t) => {
                batch.transitions.push(*t);
                None
            }
            Effect::Ack => Some(Settlement::Ack {
                delivery: consumed,
                publish: Vec::new(),
            }),
            Effect::Reply(publish) => Some(Settlement::Ack {
                delivery: consumed,
                publish,
            }),
        }
    }
}

impl Live {
    /// The transition for one step, advancing the expected version.
    pub(super) fn transition(
        &mut self,
        id: &WorkflowId,
        header: Option<WorkflowHeader>,
        append: Vec<HistoryEvent>,
        commands: &[CommandRecord],
        status: &Status,
        (consumed, at): (Consumed, Timestamp),
    ) -> Transition {
        let run = MethodRun(0);
        let mut outbox: Vec<Outgoing> = commands
            .iter()
            .filter_map(|r| {
                let command_id = CommandId::new(id.clone(), run, r.position);
                let command_id = command_id.in_generation(self.generation);
                protocol::command(&self.workflow, command_id, &r.command, at)
            })
            .collect();
        let state = match status {
            Status::Running => WorkflowState::Running,
            Status::Completed(output) => {
                if let Some(parent) = &self.parent {
                    let outcome = StepOutcome::Completed(output.clone());
                    outbox.push(protocol::completion(
                        &parent.workflow,
                        &parent.command,
                        outcome,
                        at,
                        at,
                    ));
                }
                WorkflowState::Completed(output.clone())
            }
            Status::Parked(reason) => WorkflowState::Parked(reason.to_string()),
        };
        if state.is_final() {
            outbox.extend(protocol::responses(&self.report_to, id, Some(&state), at));
        }
        let transition = protocol::step(id, self.version, header, state, append, outbox, consumed);
        self.version += 1;
        transition
    }
}

pub(super) fn scheduled(commands: &[CommandRecord]) -> Vec<HistoryEvent> {
    commands
        .iter()
        .cloned()
        .map(HistoryEvent::Scheduled)
        .collect()
}
