//! The workflow worker: owns workflow state and runs workflow code.
//!
//! Live instances stay in a bounded cache and are fed one event at a time (sticky execution);
//! on a miss the instance is rebuilt by replaying its stored history. Each event becomes one
//! [`Transition`]: new history events, new state, outgoing messages and the removal of the
//! consumed message, committed together (a batch of them per commit).

use super::cache::{Cache, CacheCounters};
use super::{backoff, lease_loop, warn_throttled, Inbox, Outbox, WorkerConfig, WorkflowInput};
use crate::protocol;
use crate::store::{
    now, CommitOutcome, Delivery, DeliveryId, Outgoing, Settlement, StateStore, StoreError,
    StoredWorkflow, Transition, Transport, WorkflowHeader, WorkflowState,
};
use crate::topics;
use infinitic_core::message::{decode_message_within, Message, ParentStep};
use infinitic_core::{
    replay_with_limits, Applied, CommandId, CommandRecord, Completion, History, HistoryEvent,
    Limits, MethodRun, Start, Status, StepOutcome, WorkflowDefinition, WorkflowId,
    WorkflowInstance,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::Instrument;

impl WorkflowInput {
    /// The span of the transition this input makes: the workflow's name and the instance id
    /// (the routing key of an event).
    fn span(&self) -> tracing::Span {
        let (workflow, id) = match self {
            WorkflowInput::TaskDone {
                workflow, command, ..
            } => (workflow.as_str(), command.workflow.as_str()),
            WorkflowInput::Event(delivery) => (
                delivery
                    .topic
                    .strip_prefix(topics::WORKFLOW_PREFIX)
                    .unwrap_or(&delivery.topic),
                delivery.key.as_str(),
            ),
        };
        // At ERROR level so that any event a subscriber shows says which instance it is
        // about; with no subscriber interested in this crate, a span costs nothing.
        tracing::error_span!("workflow", workflow, id)
    }
}

/// Services hosted by this process, and where their tasks go.
pub(super) type LocalServices = (BTreeSet<String>, Inbox<Delivery>);

pub(super) async fn run<S: Transport + StateStore>(
    store: Arc<S>,
    definitions: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    config: WorkerConfig,
    stop: watch::Receiver<bool>,
    (inbox, mut inputs): (Inbox<WorkflowInput>, Outbox<WorkflowInput>),
    local: Option<LocalServices>,
    cache: Arc<CacheCounters>,
) {
    let batch_size = config.workflow_batch.max(1);
    let receiver = tokio::spawn(lease_loop(
        Arc::clone(&store),
        definitions.keys().map(|w| topics::workflow(w)).collect(),
        config.workflow_lease,
        config.poll_interval,
        stop,
        inbox,
        move |inbox| batch_size.saturating_sub(inbox.queued()),
        WorkflowInput::Event,
    ));
    let (local_services, task_inbox) = match local {
        Some((names, inbox)) => (names, Some(inbox)),
        None => (BTreeSet::new(), None),
    };
    let mut engine = Engine {
        definitions,
        cache: Cache::new(config.cache_capacity, cache),
        local_services,
        task_lease: config.task_timeout + config.task_lease_margin,
        limits: config.limits,
    };
    let commits_in_flight = config.commits_in_flight.max(1);
    let in_flight = Arc::new(Semaphore::new(commits_in_flight));
    let (conflicts_tx, mut conflicts) = mpsc::unbounded_channel::<Vec<WorkflowId>>();
    let mut ids: Range<DeliveryId> = 0..0;
    // Runs until every sender is gone: the event receiver (at stop) and the local service
    // worker (after its in-flight tasks reported), so no finished task is left unapplied.
    let mut batch_inputs = Vec::with_capacity(batch_size);
    while inputs.recv_many(&mut batch_inputs, batch_size).await > 0 {
        while let Ok(keys) = conflicts.try_recv() {
            // Another owner moved these on, or a commit failed: rebuild them from the store.
            for key in &keys {
                engine.cache.evict(key);
            }
        }
        let mut batch = Batch::default();
        for input in batch_inputs.drain(..) {
            let span = input.span();
            let seen = (batch.transitions.len(), batch.settlements.len());
            engine
                .handle(&*store, input, &mut batch)
                .instrument(span.clone())
                .await;
            span.in_scope(|| batch.log_since(seen));
        }
        let handoffs = assign_local_ids(&*store, &mut ids, &mut batch.transitions).await;
        let keys: Vec<WorkflowId> = batch
            .transitions
            .iter()
            .map(|t| t.workflow_id.clone())
            .collect();
        let consumed: Vec<DeliveryId> = batch
            .transitions
            .iter()
            .filter_map(|t| t.consumed)
            .collect();
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        // Submitted now, so it applies before anything submitted after it: before the
        // outcomes of the tasks handed over below, and before their retries or settlements.
        // Those tasks start before this commit is durable; if it fails, every later
        // transition built on it fails its compare-and-set too, and the tasks run again
        // under the same ids when their workflows are rebuilt (at-least-once).
        let committed = store.commit(batch.transitions);
        if let Some(inbox) = &task_inbox {
            for task in handoffs {
                // If the service worker stopped, the lease brings the task back.
                let _ = inbox.send(task);
            }
        }
        let (store, conflicts_tx) = (Arc::clone(&store), conflicts_tx.clone());
        let mut settlements = batch.settlements;
        tokio::spawn(async move {
            let conflicted: Vec<WorkflowId> = match committed.await {
                Ok(outcomes) => keys
                    .into_iter()
                    .zip(outcomes)
                    .filter(|(_, outcome)| *outcome == CommitOutcome::Conflict)
                    .map(|(key, _)| key)
                    .collect(),
                Err(error) => {
                    warn_throttled(&format!("workflow commit: {}", error.kind()), || {
                        format!("commit failed, its events will be delivered again: {error}")
                    });
                    // Soon, rather than when their leases expire (a consumed message that did
                    // go with its commit is gone: nothing to deliver again).
                    let at = now() + HOLD_BASE;
                    settlements.extend(
                        consumed
                            .into_iter()
                            .map(|delivery| Settlement::Retry { delivery, at }),
                    );
                    keys
                }
            };
            if !conflicted.is_empty() {
                let _ = conflicts_tx.send(conflicted);
            }
            // Acks, holds and dead letters of this batch's events that made no transition.
            if let Err(error) = store.settle(settlements).await {
                warn_throttled(&format!("workflow settle: {}", error.kind()), || {
                    format!("cannot settle events (their leases bring them back): {error}")
                });
            }
            drop(permit);
        });
    }
    // Let the commits in flight finish.
    let _ = in_flight
        .acquire_many(u32::try_from(commits_in_flight).unwrap_or(u32::MAX))
        .await;
    let _ = receiver.await;
}

/// The first wait before an event that could not be applied now is delivered again; it
/// doubles with each delivery, up to [`super::MAX_BACKOFF`].
const HOLD_BASE: Duration = Duration::from_millis(200);

/// The version of a newly stored instance (see `StateStore::commit`).
const FIRST_VERSION: u64 = 1;

/// Message ids reserved at a time for tasks handed over in memory.
const ID_BLOCK: u32 = 4096;

/// Gives each task for a local service a reserved message id, and returns those tasks as
/// deliveries to hand over as soon as their commit is submitted. Without an id (the store
/// could not reserve one) a task is published for the lease loop instead.
async fn assign_local_ids<S: Transport>(
    store: &S,
    ids: &mut Range<DeliveryId>,
    transitions: &mut [Transition],
) -> Vec<Delivery> {
    let mut handoffs = Vec::new();
    for message in transitions.iter_mut().flat_map(|t| t.outbox.iter_mut()) {
        if message.local_lease.is_none() {
            continue;
        }
        if ids.is_empty() {
            match store.reserve_ids(ID_BLOCK).await {
                Ok(block) => *ids = block,
                Err(error) => warn_throttled(&format!("reserve ids: {}", error.kind()), || {
                    format!("cannot reserve ids: {error}")
                }),
            }
        }
        match ids.next() {
            Some(id) => {
                message.id = Some(id);
                handoffs.push(Delivery {
                    id,
                    topic: message.topic.clone(),
                    key: message.key.clone(),
                    payload: message.payload.clone(),
                    attempt: 1,
                });
            }
            None => message.local_lease = None,
        }
    }
    handoffs
}

/// What one batch of events produced.
#[derive(Default)]
struct Batch {
    transitions: Vec<Transition>,
    settlements: Vec<Settlement>,
}

impl Batch {
    /// Logs the parks and dead letters added since `(transitions, settlements)` were counted
    /// (when they are decided: the commit that records them may still fail and be redone).
    fn log_since(&self, (transitions, settlements): (usize, usize)) {
        for transition in &self.transitions[transitions..] {
            if let WorkflowState::Parked(reason) = &transition.state {
                tracing::warn!(%reason, "workflow parked");
            }
            if let Some(reason) = &transition.dead_letter {
                tracing::warn!(%reason, "workflow message dead-lettered");
            }
        }
        for settlement in &self.settlements[settlements..] {
            if let Settlement::DeadLetter { reason, .. } = settlement {
                tracing::warn!(%reason, "workflow message dead-lettered");
            }
        }
    }
}

struct Engine {
    definitions: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    cache: Cache<WorkflowId, Live>,
    /// Services of this process: their tasks are handed over in memory after the commit.
    local_services: BTreeSet<String>,
    task_lease: Duration,
    limits: Limits,
}

/// A live instance and the stored version it corresponds to.
struct Live {
    instance: WorkflowInstance,
    version: u64,
    workflow: String,
    parent: Option<ParentStep>,
}

impl Engine {
    async fn handle<S: StateStore>(&mut self, store: &S, input: WorkflowInput, batch: &mut Batch) {
        match input {
            WorkflowInput::TaskDone {
                task,
                workflow,
                command,
                outcome,
                at,
            } => {
                let applied = self
                    .complete(store, task, command.clone(), outcome.clone(), at)
                    .await;
                let settlement = match applied {
                    Ok(effect) => effect.settle(task, batch),
                    // The outcome is only in memory: keep it as an event on the store, with
                    // the task message's removal.
                    Err(NotApplied::Later { reason, park }) => {
                        warn_later(&command.workflow, &reason);
                        batch.transitions.extend(park.map(|t| *t));
                        let event = protocol::completion(
                            &workflow,
                            &command,
                            outcome,
                            at,
                            now() + HOLD_BASE,
                        );
                        Some(Settlement::Ack {
                            delivery: task,
                            publish: vec![event],
                        })
                    }
                    Err(NotApplied::Never(reason)) => Some(Settlement::DeadLetter {
                        delivery: task,
                        reason,
                        publish: Vec::new(),
                    }),
                };
                batch.settlements.extend(settlement);
            }
            WorkflowInput::Event(delivery) => {
                let (id, applied) = match decode_message_within(&delivery.payload, &self.limits) {
                    Err(error) => (
                        None,
                        Err(NotApplied::Never(format!(
                            "undecodable workflow message: {error}"
                        ))),
                    ),
                    Ok(Message::StartWorkflow {
                        workflow_id,
                        workflow,
                        method,
                        input,
                        parent,
                        pending,
                    }) => {
                        // On a redelivery, look the instance up: it may have started already.
                        let pending = pending && delivery.attempt == 1;
                        let start = (workflow_id.clone(), workflow, method, input, parent);
                        let started = self.start(store, delivery.id, pending, start).await;
                        (Some(workflow_id), started)
                    }
                    Ok(Message::CommandCompleted {
                        command,
                        outcome,
                        at,
                    }) => {
                        let id = command.workflow.clone();
                        let completed = match refuse(&outcome, &self.limits) {
                            None => {
                                self.complete(store, delivery.id, command, outcome, at)
                                    .await
                            }
                            // The workflow learns of it; the message goes to the dead letters.
                            Some(reason) => {
                                let invalid = StepOutcome::Invalid {
                                    reason: reason.clone(),
                                };
                                match self
                                    .complete(store, delivery.id, command, invalid, at)
                                    .await
                                {
                                    Ok(Effect::Transition(mut t)) => {
                                        t.dead_letter = Some(reason);
                                        Ok(Effect::Transition(t))
                                    }
                                    Ok(Effect::Ack) => Err(NotApplied::Never(reason)),
                                    Err(NotApplied::Never(error)) => {
                                        Err(NotApplied::Never(format!("{reason} ({error})")))
                                    }
                                    Err(later) => Err(later),
                                }
                            }
                        };
                        (Some(id), completed)
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
                            at: now() + backoff(HOLD_BASE, delivery.attempt),
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

    async fn start<S: StateStore>(
        &mut self,
        store: &S,
        consumed: DeliveryId,
        pending: bool,
        (id, workflow, method, input, parent): StartRequest,
    ) -> Result<Effect, NotApplied> {
        if self.cache.get(&id).is_some() {
            return Ok(Effect::Ack); // duplicate start
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
                Some(_) => return Ok(Effect::Ack), // already started: a duplicate
                None => 0,
            }
        };
        let at = now();
        let header = WorkflowHeader {
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
                consumed,
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
            workflow,
            parent,
        };
        let append = scheduled(&progress.commands);
        let transition = live.transition(
            &id,
            Some(header),
            append,
            &progress.commands,
            &progress.status,
            consumed,
        );
        self.cache.keep(id, live, &progress.status);
        Ok(Effect::transition(self.run_tasks_here(transition)))
    }

    /// Tasks for services of this process are handed over in memory after the commit.
    fn run_tasks_here(&self, mut transition: Transition) -> Transition {
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
        consumed: DeliveryId,
        command: CommandId,
        outcome: StepOutcome,
        at: infinitic_core::Timestamp,
    ) -> Result<Effect, NotApplied> {
        let id = command.workflow.clone();
        let mut recovered = Vec::new();
        let mut live = match self.cache.take(&id) {
            Some(live) => live,
            None => {
                let stored = store
                    .load(&id, true)
                    .await
                    .map_err(|e| NotApplied::store(&id, e))?
                    .ok_or_else(|| {
                        NotApplied::Never(format!("event for unknown workflow instance {id}"))
                    })?;
                match self.rebuild(stored)? {
                    Rebuilt::Live(live, new_commands) => {
                        recovered = new_commands;
                        *live
                    }
                    Rebuilt::Done(effect) => return Ok(effect),
                }
            }
        };
        let completion = Completion {
            run: command.run,
            position: command.position,
            at,
            outcome,
        };
        match live.instance.apply(completion.clone()) {
            Err(rejected) => {
                self.cache.put_back(id, live);
                Err(NotApplied::Never(format!(
                    "rejected by workflow {}: {rejected}",
                    command.workflow
                )))
            }
            Ok(Applied::Ignored(_)) => {
                self.cache.put_back(id, live);
                Ok(Effect::Ack)
            }
            Ok(Applied::Progressed(progress)) => {
                let mut append = scheduled(&recovered);
                append.push(HistoryEvent::Completed(completion));
                append.extend(scheduled(&progress.commands));
                let mut commands = recovered;
                commands.extend(progress.commands);
                let transition =
                    live.transition(&id, None, append, &commands, &progress.status, consumed);
                self.cache.keep(id, live, &progress.status);
                Ok(Effect::transition(self.run_tasks_here(transition)))
            }
        }
    }

    /// Cold path: replay the stored history with the registered code.
    fn rebuild(&self, stored: StoredWorkflow) -> Result<Rebuilt, NotApplied> {
        match &stored.state {
            WorkflowState::Running => {}
            // Kept for when the instance is retried after a fix.
            WorkflowState::Parked(reason) => {
                return Err(NotApplied::later(format!(
                    "workflow {} is parked ({reason}); its events wait",
                    stored.id
                )))
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
                    workflow: stored.header.workflow,
                    parent: stored.header.parent,
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

/// Why an event could not be applied now.
enum NotApplied {
    /// Not now (the store is unavailable, the instance is parked): delivered again later, never
    /// dead-lettered; `park` records why the instance cannot go on, where it can be recorded.
    Later {
        reason: String,
        park: Option<Box<Transition>>,
    },
    /// It can never be applied: dead-lettered with this reason.
    Never(String),
}

impl NotApplied {
    fn later(reason: String) -> Self {
        NotApplied::Later { reason, park: None }
    }

    /// A store failure while handling an event of `id`: the event waits, whatever the
    /// failure; an instance whose stored form cannot be decoded is parked with the reason
    /// (its status shows it) unless it already is.
    fn store(id: &WorkflowId, error: StoreError) -> Self {
        let reason = format!("cannot load workflow {id}: {error}");
        let park = match &error {
            StoreError::Undecodable {
                version: Some(version),
                state,
                ..
            } if !matches!(state, Some(WorkflowState::Parked(_))) => {
                Some(Box::new(protocol::park(id, *version, &error.to_string())))
            }
            _ => None,
        };
        NotApplied::Later { reason, park }
    }
}

/// Logs, at most once per interval for each kind, that an event of `id` waits.
fn warn_later(id: &WorkflowId, reason: &str) {
    let kind = match reason.split_once(':') {
        Some((_, rest)) => rest.trim().chars().take(40).collect::<String>(),
        None => reason.chars().take(40).collect(),
    };
    warn_throttled(&format!("held: {kind}"), || {
        format!("an event of {id} waits: {reason}")
    });
}

/// Why a received outcome's payload (a result, a service's error) is refused, if it is.
fn refuse(outcome: &StepOutcome, limits: &Limits) -> Option<String> {
    let (what, payload) = match outcome {
        StepOutcome::Completed(value) => ("result", value),
        StepOutcome::Failed { error, .. } => ("error", error),
        _ => return None,
    };
    let error = limits.check(payload).err()?;
    Some(format!("the step's {what} is refused: {error}"))
}

/// A start message's fields: instance id, workflow, method, input, parent step.
type StartRequest = (WorkflowId, String, String, Vec<u8>, Option<ParentStep>);

enum Rebuilt {
    Live(Box<Live>, Vec<CommandRecord>),
    Done(Effect),
}

enum Effect {
    Transition(Box<Transition>),
    Ack,
}

impl Effect {
    fn transition(t: Transition) -> Self {
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
        }
    }
}

impl Live {
    /// The transition for one step, advancing the expected version.
    fn transition(
        &mut self,
        id: &WorkflowId,
        header: Option<WorkflowHeader>,
        append: Vec<HistoryEvent>,
        commands: &[CommandRecord],
        status: &Status,
        consumed: DeliveryId,
    ) -> Transition {
        let (run, at) = (MethodRun(0), now());
        let mut outbox: Vec<Outgoing> = commands
            .iter()
            .map(|r| protocol::command(&self.workflow, id, run, r.position, &r.command, at))
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
        let transition = protocol::step(id, self.version, header, state, append, outbox, consumed);
        self.version += 1;
        transition
    }
}

fn scheduled(commands: &[CommandRecord]) -> Vec<HistoryEvent> {
    commands
        .iter()
        .cloned()
        .map(HistoryEvent::Scheduled)
        .collect()
}
