//! Workers: a service worker runs tasks on your service implementations; a workflow worker owns
//! workflow state and runs workflow code. [`Worker`] hosts both on one store.

mod cache;
mod pacing;
pub(crate) mod service;
pub(crate) mod workflow;

pub(crate) use pacing::{backoff, warn_throttled};

pub use cache::CacheStats;

use crate::clock::{Clock, WallClock};
use crate::store::{Consumed, Delivery, StateStore, Transport};
use infinitic_core::{
    CommandId, Limits, RetryPolicy, Service, StepOutcome, Timestamp, Workflow, WorkflowDefinition,
    WorkflowFactory,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Work for the workflow engine.
#[derive(Debug)]
pub(crate) enum WorkflowInput {
    /// An event leased from the store (start, outcome from another process, timer).
    Event(Delivery),
    /// A task of this process ended: apply its outcome and remove the task message in the same
    /// commit.
    TaskDone {
        /// The task's message.
        task: Consumed,
        /// The workflow (by name) that issued the command.
        workflow: String,
        /// The command it carried out.
        command: CommandId,
        /// How it ended.
        outcome: StepOutcome,
        /// When.
        at: Timestamp,
    },
}

/// How workers behave.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Service tasks running at once.
    pub service_concurrency: usize,
    /// When to retry a failed or timed-out task attempt.
    pub retry: RetryPolicy,
    /// Time limit of one task attempt.
    pub task_timeout: Duration,
    /// Live workflow instances kept in memory (sticky execution); a miss replays history.
    pub cache_capacity: usize,
    /// Workflow events handled per batch (one commit).
    pub workflow_batch: usize,
    /// Batches being committed while the next one is computed. Tasks of a batch start as soon
    /// as its commit is submitted, so this also bounds the steps run ahead of the disk.
    pub commits_in_flight: usize,
    /// How often to look for messages published by other processes.
    pub poll_interval: Duration,
    /// How long a workflow event stays leased to this worker: after a crash, its events are
    /// redelivered once this has passed.
    pub workflow_lease: Duration,
    /// A task stays leased for `task_timeout` plus this margin; after a crash, tasks in flight
    /// are redelivered once it has passed.
    pub task_lease_margin: Duration,
    /// Limits on payloads: what this worker's workflows and services encode must stay within
    /// them (else the step is `Invalid`, or the run parked), and received messages that cross
    /// them are dead-lettered with the limit named, before anything decodes them. Give clients
    /// and all workers the same limits.
    ///
    /// ```
    /// use infinitic_core::Limits;
    /// use infinitic_runtime::worker::WorkerConfig;
    /// let config = WorkerConfig {
    ///     limits: Limits { max_payload_bytes: 1024 * 1024, ..Limits::default() },
    ///     ..WorkerConfig::default()
    /// };
    /// ```
    pub limits: Limits,
    /// What "now" is for the workers: when a step ended, when a retry or a held event is due.
    /// Give the store the same clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            service_concurrency: 64,
            retry: RetryPolicy::default(),
            task_timeout: Duration::from_secs(60),
            cache_capacity: 10_000,
            workflow_batch: 256,
            commits_in_flight: 16,
            poll_interval: Duration::from_millis(50),
            workflow_lease: Duration::from_secs(30),
            task_lease_margin: Duration::from_secs(30),
            limits: Limits::default(),
            clock: Arc::new(WallClock),
        }
    }
}

/// Hosts service and workflow workers on a transport (messages) and a state store (workflow
/// state): one embedded store that is both ([`Worker::new`]), or two backends
/// ([`Worker::with_backends`]).
///
/// ```no_run
/// # async fn demo(store: infinitic_runtime::store::sqlite::SqliteStore) {
/// use infinitic_runtime::worker::Worker;
/// let running = Worker::new(store) /* .service(..).workflow(..) */ .start();
/// running.shutdown().await;
/// # }
/// ```
pub struct Worker<T, S = T> {
    transport: T,
    store: S,
    /// Built on one embedded store that is both transport and state store.
    combined: bool,
    services: BTreeMap<String, Arc<dyn Service>>,
    workflows: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    config: WorkerConfig,
}

impl<T, S> std::fmt::Debug for Worker<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .field("workflows", &self.workflows.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish()
    }
}

impl<S: Transport + StateStore + Clone> Worker<S, S> {
    /// A worker on an embedded store, which is both transport and state store: a commit
    /// publishes and settles in the same transaction, and a task for a service of this worker
    /// is handed over in memory. Nothing registered yet, default configuration.
    pub fn new(store: S) -> Self {
        Self::on(store.clone(), store, true)
    }
}

/// The state store of a worker that hosts services only ([`Worker::services_only`]): it has
/// none, and can register no workflow.
#[derive(Clone, Copy, Debug)]
pub struct NoStateStore;

impl<T: Transport> Worker<T, NoStateStore> {
    /// A worker that runs services only, on `transport`: it needs no state store (no database
    /// credentials on the machines that run services), and workflows cannot be registered on
    /// it (`.workflow(..)` does not compile).
    ///
    /// ```no_run
    /// # async fn demo(transport: infinitic_runtime::store::memory::MemoryStore) {
    /// use infinitic_runtime::worker::Worker;
    /// let running = Worker::services_only(transport) /* .service(..) */ .start();
    /// running.shutdown().await;
    /// # }
    /// ```
    pub fn services_only(transport: T) -> Self {
        Self::on(transport, NoStateStore, false)
    }

    /// Starts the service worker on the current tokio runtime.
    pub fn start(self) -> RunningWorker {
        crate::logging::install_panic_hook();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let cache = Arc::new(cache::CacheCounters::new(self.config.cache_capacity));
        if !self.services.is_empty() {
            tasks.spawn(service::run(
                Arc::new(self.transport),
                self.services,
                self.config,
                stopped,
                WorkSender::channel(),
                None,
            ));
        }
        RunningWorker { stop, tasks, cache }
    }

    /// Runs until Ctrl-C (or SIGTERM), then shuts down gracefully.
    pub async fn run_until_signal(self) {
        let running = self.start();
        shutdown_signal().await;
        running.shutdown().await;
    }
}

impl<T: Transport, S> Worker<T, S> {
    /// Registers a service implementation (a generated `…Dispatcher`).
    pub fn service(mut self, service: impl Service) -> Self {
        self.services
            .insert(service.name().to_string(), Arc::new(service));
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    fn on(transport: T, store: S, combined: bool) -> Self {
        Self {
            transport,
            store,
            combined,
            services: BTreeMap::new(),
            workflows: BTreeMap::new(),
            config: WorkerConfig::default(),
        }
    }
}

impl<T: Transport, S: StateStore> Worker<T, S> {
    /// A worker whose messages travel on `transport` and whose workflow state lives in
    /// `store`, a state store that does not settle messages itself
    /// ([`StateStore::settles_on_commit`] is false): a relay publishes what its commits put in
    /// the outbox, and consumed messages are settled on the transport after their commit.
    pub fn with_backends(transport: T, store: S) -> Self {
        Self::on(transport, store, false)
    }

    /// Registers a workflow implementation; `make` builds a fresh value per run.
    pub fn workflow<W: Workflow>(mut self, make: impl Fn() -> W + Send + Sync + 'static) -> Self {
        self.workflows
            .insert(W::NAME.to_string(), Arc::new(WorkflowFactory::new(make)));
        self
    }

    /// Starts the workers on the current tokio runtime.
    ///
    /// When one worker hosts both a workflow and the services it calls, a step costs one commit:
    /// the task is handed to the local service worker in memory right after the commit that
    /// recorded it, and its result comes back in memory to be committed with the workflow's
    /// next transition. The queue rows stay leased meanwhile, so a crash loses nothing.
    pub fn start(self) -> RunningWorker {
        crate::logging::install_panic_hook();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let (transport, store) = (Arc::new(self.transport), Arc::new(self.store));
        let local_services: BTreeSet<String> = self.services.keys().cloned().collect();
        let local_workflows: BTreeSet<String> = self.workflows.keys().cloned().collect();
        let (task_sender, task_rx) = WorkSender::channel();
        let (event_sender, event_rx) = WorkSender::channel();
        let to_services = (!self.services.is_empty()).then(|| task_sender.clone());
        let to_workflows = (!self.workflows.is_empty()).then(|| event_sender.clone());
        let cache = Arc::new(cache::CacheCounters::new(self.config.cache_capacity));
        if !self.services.is_empty() {
            tasks.spawn(service::run(
                Arc::clone(&transport),
                self.services,
                self.config.clone(),
                stopped.clone(),
                (task_sender, task_rx),
                to_workflows.map(|sender| (local_workflows, sender)),
            ));
        }
        if !self.workflows.is_empty() {
            tasks.spawn(workflow::run(
                workflow::Backends {
                    transport,
                    store,
                    combined: self.combined,
                },
                self.workflows,
                self.config,
                stopped,
                (event_sender, event_rx),
                to_services.map(|sender| (local_services, sender)),
                Arc::clone(&cache),
            ));
        }
        RunningWorker { stop, tasks, cache }
    }

    /// Runs until Ctrl-C (or SIGTERM), then shuts down gracefully.
    pub async fn run_until_signal(self) {
        let running = self.start();
        shutdown_signal().await;
        running.shutdown().await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Running workers.
#[derive(Debug)]
pub struct RunningWorker {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    cache: Arc<cache::CacheCounters>,
}

impl RunningWorker {
    /// The workflow worker's instance cache now: size, capacity, hits, misses and evictions
    /// (see [`CacheStats`], with an example). All zero but the capacity when no workflow is
    /// registered.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.snapshot()
    }

    /// Stops taking new messages, lets in-flight ones finish and commit, then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The sending end of an in-memory channel of work for a worker loop, counting what is queued so the loop that
/// leases messages from the store does not lease more than can be handled soon.
#[derive(Debug)]
pub(crate) struct WorkSender<T> {
    tx: mpsc::UnboundedSender<T>,
    queued: Arc<AtomicUsize>,
}

impl<T> Clone for WorkSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            queued: Arc::clone(&self.queued),
        }
    }
}

/// The receiving end of a [`WorkSender`].
#[derive(Debug)]
pub(crate) struct WorkReceiver<T> {
    rx: mpsc::UnboundedReceiver<T>,
    queued: Arc<AtomicUsize>,
}

impl<T> WorkSender<T> {
    pub(crate) fn channel() -> (WorkSender<T>, WorkReceiver<T>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            WorkSender {
                tx,
                queued: Arc::clone(&queued),
            },
            WorkReceiver { rx, queued },
        )
    }

    /// Queues an item; gives it back if the loop has stopped.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(item).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            e.0
        })
    }

    /// Items queued and not yet taken.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

impl<T> WorkReceiver<T> {
    /// Waits for at least one item and takes up to `max`; 0 when every sender is gone.
    pub(crate) async fn recv_many(&mut self, into: &mut Vec<T>, max: usize) -> usize {
        let n = self.rx.recv_many(into, max).await;
        self.queued.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Takes one item if there is one.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        let item = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Some(item)
    }
}

/// Leases messages of `topics` from the store into `sender` while there is `room` for them,
/// sleeping until something is published, the next delayed message is due, or `poll` passed
/// (for messages published by other processes).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn lease_loop<T: Transport, I>(
    transport: Arc<T>,
    topics: Vec<String>,
    lease: Duration,
    poll: Duration,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
    sender: WorkSender<I>,
    room: impl Fn(&WorkSender<I>) -> usize,
    wrap: impl Fn(Delivery) -> I,
) {
    let mut activity = transport.activity();
    let mut failures = 0u32;
    while !*stop.borrow() {
        let room = room(&sender);
        let wait = if room == 0 {
            poll.min(Duration::from_millis(5))
        } else {
            match transport.receive(&topics, room, lease).await {
                Ok(received) if !received.deliveries.is_empty() => {
                    failures = 0;
                    for delivery in received.deliveries {
                        if sender.send(wrap(delivery)).is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Ok(received) => {
                    failures = 0;
                    received
                        .next_visible_at
                        .map_or(poll, |t| t.saturating_duration_since(clock.now()).min(poll))
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    warn_throttled(&format!("receive: {}", error.kind()), || {
                        format!("cannot receive from {topics:?}: {error}")
                    });
                    backoff(poll, failures)
                }
            }
        };
        tokio::select! {
            _ = activity.wait(wait) => {}
            _ = stopped(&mut stop) => {}
        }
    }
}

/// Resolves once `stop` is set.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
