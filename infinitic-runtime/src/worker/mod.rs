//! Workers: a service worker runs tasks on your service implementations; a workflow worker owns
//! workflow state and runs workflow code. [`Worker`] hosts both on one store.

mod service;
mod workflow;

use crate::store::{StateStore, Transport};
use infinitic_core::{RetryPolicy, Service, Workflow, WorkflowDefinition, WorkflowFactory};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

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
    /// How often to look for messages published by other processes.
    pub poll_interval: Duration,
    /// How long a workflow event stays leased to this worker: after a crash, its events are
    /// redelivered once this has passed.
    pub workflow_lease: Duration,
    /// A task stays leased for `task_timeout` plus this margin; after a crash, tasks in flight
    /// are redelivered once it has passed.
    pub task_lease_margin: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            service_concurrency: 64,
            retry: RetryPolicy::default(),
            task_timeout: Duration::from_secs(60),
            cache_capacity: 10_000,
            workflow_batch: 256,
            poll_interval: Duration::from_millis(50),
            workflow_lease: Duration::from_secs(30),
            task_lease_margin: Duration::from_secs(30),
        }
    }
}

/// Hosts service and workflow workers on one store.
///
/// ```no_run
/// # async fn demo(store: infinitic_runtime::store::sqlite::SqliteStore) {
/// use infinitic_runtime::worker::Worker;
/// let running = Worker::new(store) /* .service(..).workflow(..) */ .start();
/// running.shutdown().await;
/// # }
/// ```
pub struct Worker<S> {
    store: S,
    services: BTreeMap<String, Arc<dyn Service>>,
    workflows: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    config: WorkerConfig,
}

impl<S> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .field("workflows", &self.workflows.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish()
    }
}

impl<S: Transport + StateStore + Clone> Worker<S> {
    /// A worker with nothing registered and the default configuration.
    pub fn new(store: S) -> Self {
        Self {
            store,
            services: BTreeMap::new(),
            workflows: BTreeMap::new(),
            config: WorkerConfig::default(),
        }
    }

    /// Registers a service implementation (a generated `…Dispatcher`).
    pub fn service(mut self, service: impl Service) -> Self {
        self.services
            .insert(service.name().to_string(), Arc::new(service));
        self
    }

    /// Registers a workflow implementation; `make` builds a fresh value per run.
    pub fn workflow<W: Workflow>(mut self, make: impl Fn() -> W + Send + Sync + 'static) -> Self {
        self.workflows
            .insert(W::NAME.to_string(), Arc::new(WorkflowFactory::new(make)));
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the workers on the current tokio runtime.
    pub fn start(self) -> RunningWorker {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        if !self.services.is_empty() {
            tasks.spawn(service::run(
                self.store.clone(),
                self.services,
                self.config.clone(),
                stopped.clone(),
            ));
        }
        if !self.workflows.is_empty() {
            tasks.spawn(workflow::run(
                self.store,
                self.workflows,
                self.config,
                stopped,
            ));
        }
        RunningWorker { stop, tasks }
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
}

impl RunningWorker {
    /// Stops taking new messages, lets in-flight ones finish and commit, then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A number in `[0, 1)` for retry jitter: not deterministic, and need not be.
fn jitter_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
