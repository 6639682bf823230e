//! The workflow worker: owns workflow state and runs workflow code.
//!
//! Live instances stay in a bounded cache and are fed one event at a time (sticky execution);
//! on a miss the instance is rebuilt by replaying its stored history. Each event becomes one
//! [`Transition`]: new history events, new state, outgoing messages and the removal of the
//! consumed message, committed together (a batch of them per commit).

use super::service::completion;
use super::WorkerConfig;
use crate::store::{
    now, CommitOutcome, Delivery, Outgoing, Settlement, StateStore, StoredWorkflow, Transition,
    Transport, WorkflowHeader, WorkflowState,
};
use crate::topics;
use infinitic_core::message::{decode_message, encode_message, Message, ParentStep};
use infinitic_core::{
    encode, replay, Applied, Command, CommandId, CommandRecord, Completion, History, HistoryEvent,
    MethodRun, Start, Status, StepOutcome, WorkflowDefinition, WorkflowId, WorkflowInstance,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::watch;

pub(super) async fn run<S: Transport + StateStore>(
    store: S,
    definitions: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    config: WorkerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let topics: Vec<String> = definitions.keys().map(|w| topics::workflow(w)).collect();
    let mut engine = Engine {
        definitions,
        cache: Cache::new(config.cache_capacity),
    };
    let mut activity = store.activity();
    while !*stop.borrow() {
        let received = match store.receive(&topics, config.workflow_batch, config.workflow_lease).await {
            Ok(received) => received,
            Err(error) => {
                eprintln!("infinitic workflow worker: cannot receive events: {error}");
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
        let mut batch = Batch::default();
        for delivery in received.deliveries {
            engine.handle(&store, delivery, &mut batch).await;
        }
        let keys: Vec<WorkflowId> = batch
            .transitions
            .iter()
            .map(|t| t.workflow_id.clone())
            .collect();
        match store.commit(batch.transitions).await {
            Ok(outcomes) => {
                for (key, outcome) in keys.iter().zip(outcomes) {
                    if outcome == CommitOutcome::Conflict {
                        // Another owner moved it on: rebuild from the store next time.
                        engine.cache.evict(key);
                    }
                }
            }
            Err(error) => {
                eprintln!(
                    "infinitic workflow worker: commit failed, events will be redelivered: {error}"
                );
                for key in &keys {
                    engine.cache.evict(key);
                }
            }
        }
        if let Err(error) = store.settle(batch.settlements).await {
            eprintln!("infinitic workflow worker: cannot settle events: {error}");
        }
    }
}

/// What one batch of events produced.
#[derive(Default)]
struct Batch {
    transitions: Vec<Transition>,
    settlements: Vec<Settlement>,
}

struct Engine {
    definitions: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    cache: Cache,
}

/// A live instance and the stored version it corresponds to.
struct Live {
    instance: WorkflowInstance,
    version: u64,
    workflow: String,
    parent: Option<ParentStep>,
}

impl Engine {
    async fn handle<S: StateStore>(&mut self, store: &S, delivery: Delivery, batch: &mut Batch) {
        let dead = |reason: String| Settlement::DeadLetter {
            delivery: delivery.id,
            reason,
            publish: Vec::new(),
        };
        let message = match decode_message(&delivery.payload) {
            Ok(message) => message,
            Err(error) => {
                batch
                    .settlements
                    .push(dead(format!("undecodable workflow message: {error}")));
                return;
            }
        };
        let result = match message {
            Message::StartWorkflow {
                workflow_id,
                workflow,
                method,
                input,
                parent,
            } => {
                self.start(
                    store,
                    &delivery,
                    workflow_id,
                    workflow,
                    method,
                    input,
                    parent,
                )
                .await
            }
            Message::CommandCompleted {
                command,
                outcome,
                at,
            } => self.complete(store, &delivery, command, outcome, at).await,
            other => Err(format!(
                "not a workflow event on {}: {other:?}",
                delivery.topic
            )),
        };
        match result {
            Ok(Effect::Transition(t)) => batch.transitions.push(*t),
            Ok(Effect::Ack) => batch.settlements.push(Settlement::Ack {
                delivery: delivery.id,
                publish: Vec::new(),
            }),
            Err(reason) => batch.settlements.push(dead(reason)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn start<S: StateStore>(
        &mut self,
        store: &S,
        delivery: &Delivery,
        id: WorkflowId,
        workflow: String,
        method: String,
        input: Vec<u8>,
        parent: Option<ParentStep>,
    ) -> Result<Effect, String> {
        if self.cache.get(&id).is_some() {
            return Ok(Effect::Ack); // duplicate start
        }
        let existing = store
            .load(&id, false)
            .await
            .map_err(|e| format!("cannot load workflow {id}: {e}"))?;
        let expected_version = match &existing {
            Some(stored) if stored.state == WorkflowState::Pending => stored.version,
            Some(_) => return Ok(Effect::Ack), // already started: a duplicate
            None => 0,
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
            let outbox = parent
                .iter()
                .map(|p| completion(&p.workflow, &p.command, outcome.clone()))
                .collect();
            Effect::transition(Transition {
                workflow_id: id.clone(),
                expected_version,
                header: Some(header.clone()),
                state: WorkflowState::Failed(reason.clone()),
                append: Vec::new(),
                outbox,
                consumed: Some(delivery.id),
                dead_letter: Some(reason),
            })
        };
        let Some(definition) = self.definitions.get(&workflow).cloned() else {
            let reason = format!("no workflow named `{workflow}` is registered on this worker");
            return Ok(failed(reason.clone(), StepOutcome::Unknown { reason }));
        };
        let started = WorkflowInstance::start(
            &*definition,
            Start {
                workflow_id: id.clone(),
                run: MethodRun(0),
                method: &method,
                input: &input,
                at,
            },
        );
        let (instance, progress) = match started {
            Ok(started) => started,
            Err(error) => {
                let outcome = match &error {
                    infinitic_core::DispatchError::UnknownMethod { .. } => StepOutcome::Unknown {
                        reason: error.to_string(),
                    },
                    infinitic_core::DispatchError::BadArguments { .. } => StepOutcome::Invalid {
                        reason: error.to_string(),
                    },
                };
                return Ok(failed(error.to_string(), outcome));
            }
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
            delivery,
        );
        self.cache.keep(id, live, &progress.status);
        Ok(Effect::transition(transition))
    }

    async fn complete<S: StateStore>(
        &mut self,
        store: &S,
        delivery: &Delivery,
        command: CommandId,
        outcome: StepOutcome,
        at: infinitic_core::Timestamp,
    ) -> Result<Effect, String> {
        let id = command.workflow.clone();
        let mut recovered = Vec::new();
        let mut live = match self.cache.take(&id) {
            Some(live) => live,
            None => {
                let stored = store
                    .load(&id, true)
                    .await
                    .map_err(|e| format!("cannot load workflow {id}: {e}"))?
                    .ok_or_else(|| format!("event for unknown workflow instance {id}"))?;
                match self.rebuild(stored, delivery)? {
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
                Err(format!(
                    "rejected by workflow {}: {rejected}",
                    command.workflow
                ))
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
                    live.transition(&id, None, append, &commands, &progress.status, delivery);
                self.cache.keep(id, live, &progress.status);
                Ok(Effect::transition(transition))
            }
        }
    }

    /// Cold path: replay the stored history with the registered code.
    fn rebuild(&self, stored: StoredWorkflow, delivery: &Delivery) -> Result<Rebuilt, String> {
        match &stored.state {
            WorkflowState::Running => {}
            state if state.is_final() => return Ok(Rebuilt::Done(Effect::Ack)), // late event
            _ => {
                return Err(format!(
                    "event for workflow {} that has not started",
                    stored.id
                ))
            }
        }
        let definition = self
            .definitions
            .get(&stored.header.workflow)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no workflow named `{}` is registered",
                    stored.header.workflow
                )
            })?;
        let history = History {
            workflow_id: stored.id.clone(),
            workflow: stored.header.workflow.clone(),
            method: stored.header.method.clone(),
            input: stored.header.input.clone(),
            started_at: stored.header.started_at,
            events: stored.history,
        };
        let parked = |reason: String| {
            Rebuilt::Done(Effect::transition(Transition {
                workflow_id: stored.id.clone(),
                expected_version: stored.version,
                header: None,
                state: WorkflowState::Parked(reason.clone()),
                append: Vec::new(),
                outbox: Vec::new(),
                consumed: Some(delivery.id),
                dead_letter: Some(format!("workflow parked: {reason}")),
            }))
        };
        let replayed = match replay(&*definition, &history) {
            Ok(replayed) => replayed,
            Err(error) => return Ok(parked(error.to_string())),
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
            Status::Parked(reason) => Ok(parked(reason.to_string())),
            Status::Completed(_) => Ok(parked(
                "replay completed the workflow before the end of its history".into(),
            )),
        }
    }
}

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
        delivery: &Delivery,
    ) -> Transition {
        let run = MethodRun(0);
        let mut outbox: Vec<Outgoing> = commands
            .iter()
            .map(|record| self.dispatch(id, run, record))
            .collect();
        let state = match status {
            Status::Running => WorkflowState::Running,
            Status::Completed(output) => {
                if let Some(parent) = &self.parent {
                    outbox.push(completion(
                        &parent.workflow,
                        &parent.command,
                        StepOutcome::Completed(output.clone()),
                    ));
                }
                WorkflowState::Completed(output.clone())
            }
            Status::Parked(reason) => WorkflowState::Parked(reason.to_string()),
        };
        let transition = Transition {
            workflow_id: id.clone(),
            expected_version: self.version,
            header,
            state,
            append,
            outbox,
            consumed: Some(delivery.id),
            dead_letter: None,
        };
        self.version += 1;
        transition
    }

    /// The message that carries out one command.
    fn dispatch(&self, id: &WorkflowId, run: MethodRun, record: &CommandRecord) -> Outgoing {
        let command = CommandId::new(id.clone(), run, record.position);
        let at = now();
        match &record.command {
            Command::CallService {
                service,
                method,
                args,
            } => Outgoing {
                topic: topics::service(service),
                key: command.to_string(),
                payload: encode_message(&Message::ExecuteTask {
                    task: command,
                    workflow: self.workflow.clone(),
                    service: service.to_string(),
                    method: method.to_string(),
                    args: args.clone(),
                    attempt: 1,
                }),
                deliver_at: at,
            },
            // A durable timer is a message delivered at its time.
            Command::StartTimer { fire_at } => Outgoing {
                topic: topics::workflow(&self.workflow),
                key: id.to_string(),
                payload: encode_message(&Message::CommandCompleted {
                    command,
                    outcome: StepOutcome::Completed(encode(&()).unwrap_or_default()),
                    at: *fire_at,
                }),
                deliver_at: *fire_at,
            },
            Command::StartChild {
                workflow,
                method,
                args,
            } => {
                let child = WorkflowId::new(command.to_string());
                Outgoing {
                    topic: topics::workflow(workflow),
                    key: child.to_string(),
                    payload: encode_message(&Message::StartWorkflow {
                        workflow_id: child,
                        workflow: workflow.to_string(),
                        method: method.to_string(),
                        input: args.clone(),
                        parent: Some(ParentStep {
                            workflow: self.workflow.clone(),
                            command,
                        }),
                    }),
                    deliver_at: at,
                }
            }
        }
    }
}

fn scheduled(commands: &[CommandRecord]) -> Vec<HistoryEvent> {
    commands
        .iter()
        .cloned()
        .map(HistoryEvent::Scheduled)
        .collect()
}

/// Live instances by id, bounded by count; the oldest entry goes first.
struct Cache {
    capacity: usize,
    live: HashMap<WorkflowId, Live>,
    order: VecDeque<WorkflowId>,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            live: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, id: &WorkflowId) -> Option<&Live> {
        self.live.get(id)
    }

    fn take(&mut self, id: &WorkflowId) -> Option<Live> {
        self.live.remove(id)
    }

    fn put_back(&mut self, id: WorkflowId, live: Live) {
        self.live.insert(id, live);
    }

    /// Keeps a running instance; a finished one is dropped.
    fn keep(&mut self, id: WorkflowId, live: Live, status: &Status) {
        if *status != Status::Running || self.capacity == 0 {
            return;
        }
        if self.live.insert(id.clone(), live).is_none() {
            self.order.push_back(id);
        }
        while self.live.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.live.remove(&oldest);
                }
                None => break,
            }
        }
        // Ids of entries removed by `take` linger in `order`; trim them now and then.
        if self.order.len() > 2 * self.capacity.max(16) {
            let live = &self.live;
            self.order.retain(|id| live.contains_key(id));
        }
    }

    fn evict(&mut self, id: &WorkflowId) {
        self.live.remove(id);
    }
}
