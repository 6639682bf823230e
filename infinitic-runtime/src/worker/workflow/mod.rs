//! The workflow worker: owns workflow state and runs workflow code.
//!
//! Live instances stay in a bounded cache and are fed one event at a time (sticky execution);
//! on a miss the instance is rebuilt by replaying its stored history. Each event becomes one
//! [`Transition`]: new history events, new state, outgoing messages and the removal of the
//! consumed message, committed together (a batch of them per commit).

use super::cache::CacheCounters;
use super::{lease_loop, warn_throttled, WorkReceiver, WorkSender, WorkerConfig, WorkflowInput};
use crate::store::{
    CommitOutcome, Consumed, Delivery, DeliveryId, LocalHandoff, Settlement, StateStore,
    StoreError, Transition, Transport, WorkflowState,
};
use crate::topics;
use infinitic_core::{WorkflowDefinition, WorkflowId};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::Instrument;

mod instances;
mod not_applied;
mod oversized;
mod parked;
mod rebuild;
mod report;
mod signals;
mod start;

use instances::Instances;

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
pub(super) type LocalServices = (BTreeSet<String>, WorkSender<Delivery>);

/// The backends a workflow worker runs on.
pub(super) struct Backends<T, S> {
    pub(super) transport: Arc<T>,
    pub(super) store: Arc<S>,
    /// The store is the transport (an embedded store): its commits publish and settle, and it
    /// may offer the in-memory hand-off of tasks. Otherwise a relay publishes the outbox and
    /// consumed messages are settled on the transport after their commit.
    pub(super) combined: bool,
}

pub(super) async fn run<T: Transport, S: StateStore>(
    Backends {
        transport,
        store,
        combined,
    }: Backends<T, S>,
    definitions: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    config: WorkerConfig,
    stop: watch::Receiver<bool>,
    (sender, mut inputs): (WorkSender<WorkflowInput>, WorkReceiver<WorkflowInput>),
    local: Option<LocalServices>,
    cache: Arc<CacheCounters>,
) {
    let batch_size = config.workflow_batch.max(1);
    let relay = (!combined).then(|| {
        let notify = Arc::new(tokio::sync::Notify::new());
        let (finish, finished) = watch::channel(false);
        let task = tokio::spawn(relay_outbox(
            Arc::clone(&transport),
            Arc::clone(&store),
            Arc::clone(&notify),
            config.poll_interval,
            finished,
        ));
        (notify, finish, task)
    });
    let handoff = combined
        .then(|| transport.local_handoff())
        .flatten()
        .is_some();
    let receiver = tokio::spawn(lease_loop(
        Arc::clone(&transport),
        definitions.keys().map(|w| topics::workflow(w)).collect(),
        config.workflow_lease,
        config.poll_interval,
        Arc::clone(&config.clock),
        stop,
        sender,
        move |sender| batch_size.saturating_sub(sender.queued()),
        WorkflowInput::Event,
    ));
    let (local_services, task_sender) = match local {
        Some((names, sender)) if handoff => (names, Some(sender)),
        _ => (BTreeSet::new(), None),
    };
    let mut instances = Instances::new(definitions, &config, local_services, cache);
    let commits_in_flight = config.commits_in_flight.max(1);
    let in_flight = Arc::new(Semaphore::new(commits_in_flight));
    let (conflicts_tx, mut conflicts) = mpsc::unbounded_channel::<Vec<WorkflowId>>();
    let mut ids: Range<u64> = 0..0;
    // Runs until every sender is gone: the event receiver (at stop) and the local service
    // worker (after its in-flight tasks reported), so no finished task is left unapplied.
    let mut batch_inputs = Vec::with_capacity(batch_size);
    while inputs.recv_many(&mut batch_inputs, batch_size).await > 0 {
        while let Ok(keys) = conflicts.try_recv() {
            // Another owner moved these on, or a commit failed: rebuild them from the store.
            for key in &keys {
                instances.cache.evict(key);
            }
        }
        let mut batch = Batch::of(&mut instances, &*store, batch_inputs.drain(..)).await;
        if let Some(limit) = transport.max_message_bytes() {
            let now = instances.clock.now();
            for id in oversized::park_oversized(&mut batch, limit, now) {
                instances.cache.evict(&id);
            }
        }
        let handoffs = match transport.local_handoff().filter(|_| handoff) {
            Some(handoff) => assign_local_ids(handoff, &mut ids, &mut batch.transitions).await,
            None => Vec::new(),
        };
        let keys: Vec<WorkflowId> = batch
            .transitions
            .iter()
            .map(|t| t.workflow_id.clone())
            .collect();
        // What each transition consumed: settled on the transport after the commit, unless
        // the commit itself does it.
        let consumed: Vec<Option<Settlement>> = batch
            .transitions
            .iter()
            .map(|t| {
                t.consumed
                    .as_ref()
                    .map(|c| settlement_of(c, &t.dead_letter))
            })
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
        if let Some(sender) = &task_sender {
            for task in handoffs {
                // If the service worker stopped, the lease brings the task back.
                let _ = sender.send(task);
            }
        }
        let (transport, conflicts_tx) = (Arc::clone(&transport), conflicts_tx.clone());
        let relayed = relay.as_ref().map(|(notify, ..)| Arc::clone(notify));
        let clock = Arc::clone(&config.clock);
        let mut settlements = batch.settlements;
        tokio::spawn(async move {
            let conflicted: Vec<WorkflowId> = match committed.await {
                Ok(outcomes) => {
                    let now = clock.now();
                    for (settle, outcome) in consumed.iter().zip(&outcomes) {
                        let Some(settle) = settle else { continue };
                        match outcome {
                            // The commit settled it (an embedded store) or it is settled now.
                            CommitOutcome::Committed if combined => {}
                            CommitOutcome::Committed => settlements.push(settle.clone()),
                            // Not applied (the instance moved on elsewhere, or the message was
                            // consumed already): delivered again soon, to the instance as
                            // stored, rather than when its lease expires.
                            CommitOutcome::Conflict => settlements.push(Settlement::Retry {
                                delivery: settle.delivery(),
                                at: now + HOLD_BASE,
                            }),
                        }
                    }
                    if let Some(relay) = &relayed {
                        relay.notify_one();
                    }
                    keys.into_iter()
                        .zip(outcomes)
                        .filter(|(_, outcome)| *outcome == CommitOutcome::Conflict)
                        .map(|(key, _)| key)
                        .collect()
                }
                Err(error) => {
                    warn_throttled(&format!("workflow commit: {}", error.kind()), || {
                        format!("commit failed, its events will be delivered again: {error}")
                    });
                    // Soon, rather than when their leases expire (a consumed message that did
                    // go with its commit is gone: nothing to deliver again).
                    let at = clock.now() + HOLD_BASE;
                    settlements.extend(consumed.into_iter().flatten().map(|settle| {
                        Settlement::Retry {
                            delivery: settle.delivery(),
                            at,
                        }
                    }));
                    keys
                }
            };
            if !conflicted.is_empty() {
                let _ = conflicts_tx.send(conflicted);
            }
            // Acks, holds and dead letters of this batch's events that made no transition.
            if let Err(error) = transport.settle(settlements).await {
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
    if let Some((_, finish, relay)) = relay {
        // Published before the worker returns: what its last commits recorded.
        let _ = finish.send(true);
        let _ = relay.await;
    }
}

/// A workflow worker without its loops, on an embedded store: the
/// [`WorkflowTester`](crate::tester::WorkflowTester) hands it the events due at its virtual
/// time and commits each batch before taking the next. The instances run exactly as in the
/// worker's loop ([`run`]); only the pipelining of commits is left out.
pub(crate) struct Stepper {
    instances: Instances,
}

impl Stepper {
    pub(crate) fn new(
        definitions: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
        config: &WorkerConfig,
    ) -> Self {
        let cache = Arc::new(CacheCounters::new(config.cache_capacity));
        Self {
            instances: Instances::new(definitions, config, BTreeSet::new(), cache),
        }
    }

    /// Applies `deliveries`, in order, and commits what they made on `store`, a store that
    /// settles what its commits consume.
    pub(crate) async fn step<S: Transport + StateStore>(
        &mut self,
        store: &S,
        deliveries: Vec<Delivery>,
    ) -> Result<(), StoreError> {
        let inputs = deliveries.into_iter().map(WorkflowInput::Event);
        let mut batch = Batch::of(&mut self.instances, store, inputs).await;
        if let Some(limit) = store.max_message_bytes() {
            let now = self.instances.clock.now();
            for id in oversized::park_oversized(&mut batch, limit, now) {
                self.instances.cache.evict(&id);
            }
        }
        let keys: Vec<WorkflowId> = batch
            .transitions
            .iter()
            .map(|t| t.workflow_id.clone())
            .collect();
        let outcomes = store.commit(batch.transitions).await?;
        for (key, outcome) in keys.iter().zip(outcomes) {
            if outcome == CommitOutcome::Conflict {
                self.instances.cache.evict(key);
            }
        }
        store.settle(batch.settlements).await
    }
}

/// How a committed transition's consumed message is settled on a transport that is not the
/// store: removed, or moved to the dead letters when the transition says so.
fn settlement_of(consumed: &Consumed, dead_letter: &Option<String>) -> Settlement {
    match dead_letter {
        Some(reason) => Settlement::DeadLetter {
            delivery: consumed.delivery,
            reason: reason.clone(),
            publish: Vec::new(),
        },
        None => Settlement::Ack {
            delivery: consumed.delivery,
            publish: Vec::new(),
        },
    }
}

/// Publishes what commits put in the store's outbox, oldest first, then forgets it: woken by
/// each commit, and every `poll` for commits of other processes. Once `finish` is set (the
/// worker's last commit is done), empties the outbox once more and returns. A crash between
/// publishing and forgetting publishes again, with the same message ids. Every
/// [`SWEEP_EVERY`] it also publishes again the store's overdue timers (whose wake-up the
/// broker lost or delayed, see [`StateStore::overdue_timers`]).
async fn relay_outbox<T: Transport, S: StateStore>(
    transport: Arc<T>,
    store: Arc<S>,
    notify: Arc<tokio::sync::Notify>,
    poll: Duration,
    mut finish: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut swept = tokio::time::Instant::now();
    loop {
        let stopping = *finish.borrow();
        let sweep = swept.elapsed() >= SWEEP_EVERY;
        let relayed = async {
            if sweep {
                let timers = store.overdue_timers(RELAY_BATCH).await?;
                if !timers.is_empty() {
                    tracing::info!(count = timers.len(), "overdue timers published again");
                    transport.publish(timers).await?;
                }
                swept = tokio::time::Instant::now();
            }
            let entries = store.outbox(RELAY_BATCH).await?;
            let count = entries.len();
            if count > 0 {
                let ids = entries.iter().map(|e| e.id).collect();
                transport
                    .publish(entries.into_iter().map(|e| e.message).collect())
                    .await?;
                store.clear_outbox(ids).await?;
            }
            Ok::<_, crate::store::StoreError>(count)
        };
        let wait = match relayed.await {
            Ok(RELAY_BATCH) => {
                failures = 0;
                continue;
            }
            Ok(_) if stopping => return,
            Ok(_) => {
                failures = 0;
                poll
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                warn_throttled(&format!("relay: {}", error.kind()), || {
                    format!("cannot relay the outbox (it stays there): {error}")
                });
                if stopping {
                    return;
                }
                super::backoff(poll, failures)
            }
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = super::stopped(&mut finish) => {}
        }
    }
}

/// How often the relay looks for overdue timers.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Outbox entries relayed at a time.
const RELAY_BATCH: usize = 256;

/// The first wait before an event that could not be applied now is delivered again; it
/// doubles with each delivery, up to `pacing::MAX_BACKOFF`.
const HOLD_BASE: Duration = Duration::from_millis(200);

/// The version of a newly stored instance (see `StateStore::commit`).
const FIRST_VERSION: u64 = 1;

/// Message ids reserved at a time for tasks handed over in memory.
const ID_BLOCK: u32 = 4096;

/// Gives each task for a local service a reserved message id, and returns those tasks as
/// deliveries to hand over as soon as their commit is submitted. Without an id (the store
/// could not reserve one) a task is published for the lease loop instead.
async fn assign_local_ids(
    store: &dyn LocalHandoff,
    ids: &mut Range<u64>,
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
        match ids.next().map(DeliveryId::new) {
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
pub(super) struct Batch {
    transitions: Vec<Transition>,
    settlements: Vec<Settlement>,
}

impl Batch {
    /// What `inputs` make, in order: each one's transition or settlement.
    async fn of<S: StateStore>(
        instances: &mut Instances,
        store: &S,
        inputs: impl IntoIterator<Item = WorkflowInput>,
    ) -> Batch {
        let mut batch = Batch::default();
        for input in inputs {
            let span = input.span();
            let seen = (batch.transitions.len(), batch.settlements.len());
            instances
                .handle(store, input, &mut batch)
                .instrument(span.clone())
                .await;
            span.in_scope(|| batch.log_since(seen));
        }
        batch
    }

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
