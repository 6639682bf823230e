//! One integration suite, generic over the deployment: the same test bodies run on
//!
//! - `embedded`: one worker on an SQLite file in a temporary directory (real file, fsync on),
//!   which is both the transport and the state store; always;
//! - `split`: the distributed shape in memory (a transport, a separate state store, clients
//!   over the transport that only read the state store); always;
//! - `distributed`: workers on an Apache Pulsar transport with their state in PostgreSQL
//!   (`Worker::with_backends`), on topics, a subscription and a schema of their own per test;
//!   with the features `postgres` and `pulsar`. It needs `INFINITIC_PG_URL` and
//!   `INFINITIC_PULSAR_URL` (`scripts/test-distributed.sh` starts both servers and runs this
//!   suite); without them its tests print that they are skipped, except under `CI=true`,
//!   where they fail.
//!
//! Cases, one file each: billing (the example's workflow over short months), retries,
//! timers, child workflows, dead letters (a method the worker lacks), bad input published to
//! our topics, new workers taking over after a restart. Filter by deployment:
//! `cargo test --test deployments embedded::`.

#[allow(dead_code)]
#[path = "../support/dead_letters.rs"]
mod dead_letters;
#[cfg(all(feature = "postgres", feature = "pulsar"))]
#[allow(dead_code)]
#[path = "../support/postgres.rs"]
mod pg;
#[cfg(all(feature = "postgres", feature = "pulsar"))]
#[path = "../support/pulsar.rs"]
mod pulsar;

mod bad_input;
mod billing;
mod children;
mod clients;
mod dead_letter;
mod restart;
mod retries;
mod timers;

use infinitic::store::sqlite::OpenMode;
use infinitic::store::DeadLetter;
use infinitic::{
    Client, RetryPolicy, RunningWorker, SqliteStore, StateStore, Transport, Worker, WorkerConfig,
    WorkflowHandle,
};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where workers run and how a client reaches them.
pub trait Deployment {
    /// What messages travel on.
    type T: Transport + Clone + Send + Sync + 'static;
    /// Where workflow state lives (what the client reads).
    type S: StateStore + Clone + Send + Sync + 'static;

    /// Starts workers with what `register` adds, retrying failed tasks by `retry`.
    fn start(
        &self,
        retry: RetryPolicy,
        register: impl FnOnce(Worker<Self::T, Self::S>) -> Worker<Self::T, Self::S>,
    ) -> RunningWorker;

    /// A client of this deployment.
    fn client(&self) -> Client<Self::S>;

    /// A client as another process opens it, on connections of its own; on the distributed
    /// deployment it reads PostgreSQL as a role that may only read.
    fn other_client(&self) -> impl Future<Output = Client<Self::S>> + Send;

    /// The transport, to publish raw bytes and read dead letters.
    fn transport(&self) -> &Self::T;

    /// How long a short workflow may take here before the test fails.
    fn patience(&self) -> Duration;

    /// Stops `worker` and closes what the deployment opened.
    fn stop(self, worker: RunningWorker) -> impl Future<Output = ()> + Send;

    /// Stops `worker` and opens the backends again, as a new process would: workers started
    /// afterwards take over where it stopped.
    fn restart(&mut self, worker: RunningWorker) -> impl Future<Output = ()> + Send;
}

/// The result of `handle`, within the deployment's patience; panics on an error.
pub async fn finish<D: Deployment, R: DeserializeOwned>(
    d: &D,
    handle: &WorkflowHandle<R, D::S>,
) -> R {
    match handle.result_within(d.patience()).await {
        Ok(result) => result,
        Err(e) => panic!("{}: {e}", handle.id()),
    }
}

/// Waits (within the deployment's patience) until `accept` likes the dead letters; returns
/// them, newest first.
pub async fn dead_letters_until<D: Deployment>(
    d: &D,
    accept: impl Fn(&[DeadLetter]) -> bool,
) -> Vec<DeadLetter> {
    let deadline = Instant::now() + d.patience();
    loop {
        let letters = d.transport().dead_letters(100).await.unwrap();
        if accept(&letters) {
            return letters;
        }
        assert!(Instant::now() < deadline, "dead letters: {letters:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A retry policy without jitter: `attempts` attempts, `first` then doubling delays.
pub fn retries(attempts: u32, first: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        initial_delay: first,
        multiplier: 2.0,
        max_delay: Duration::from_secs(2),
        jitter: 0.0,
    }
}

// ---- Embedded: one SQLite file -----------------------------------------------------------

/// One SQLite file in a fresh directory (removed at the end): transport and state store.
pub struct Embedded {
    dir: PathBuf,
    store: SqliteStore,
}

impl Embedded {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "infinitic-deployments-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(dir.join("store.db"), OpenMode::CreateIfMissing).unwrap();
        Self { dir, store }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Deployment for Embedded {
    type T = SqliteStore;
    type S = SqliteStore;

    fn start(
        &self,
        retry: RetryPolicy,
        register: impl FnOnce(Worker<SqliteStore>) -> Worker<SqliteStore>,
    ) -> RunningWorker {
        register(Worker::new(self.store.clone()))
            .config(WorkerConfig {
                retry,
                poll_interval: Duration::from_millis(5),
                task_timeout: Duration::from_secs(5),
                ..WorkerConfig::default()
            })
            .start()
    }

    fn client(&self) -> Client<SqliteStore> {
        Client::new(self.store.clone())
    }

    async fn other_client(&self) -> Client<SqliteStore> {
        let path = self.dir.join("store.db");
        Client::new(SqliteStore::open(path, OpenMode::MustExist).unwrap())
    }

    fn transport(&self) -> &SqliteStore {
        &self.store
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(10)
    }

    async fn stop(self, worker: RunningWorker) {
        worker.shutdown().await;
    }

    async fn restart(&mut self, worker: RunningWorker) {
        worker.shutdown().await;
        let path = self.dir.join("store.db");
        self.store = SqliteStore::open(path, OpenMode::MustExist).unwrap();
    }
}

// ---- Split, in memory: the distributed shape without servers ------------------------------

/// The distributed deployment's shape in memory: messages on one backend, workflow state in
/// another that publishes nothing itself (a relay does), and clients over the "broker" that
/// never write to the state store. Always run, so `cargo test` covers that path.
pub struct Split {
    transport: infinitic::MemoryStore,
    state: infinitic::store::memory_state::MemoryStateStore,
}

impl Split {
    fn new() -> Self {
        Self {
            transport: infinitic::MemoryStore::new(),
            state: infinitic::store::memory_state::MemoryStateStore::new(),
        }
    }
}

impl Deployment for Split {
    type T = infinitic::MemoryStore;
    type S = infinitic::store::memory_state::MemoryStateStore;

    fn start(
        &self,
        retry: RetryPolicy,
        register: impl FnOnce(Worker<Self::T, Self::S>) -> Worker<Self::T, Self::S>,
    ) -> RunningWorker {
        register(Worker::with_backends(
            self.transport.clone(),
            self.state.clone(),
        ))
        .config(WorkerConfig {
            retry,
            poll_interval: Duration::from_millis(5),
            task_timeout: Duration::from_secs(5),
            ..WorkerConfig::default()
        })
        .start()
    }

    fn client(&self) -> Client<Self::S> {
        Client::with_backends(self.transport.clone(), self.state.clone())
    }

    async fn other_client(&self) -> Client<Self::S> {
        self.client()
    }

    fn transport(&self) -> &Self::T {
        &self.transport
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(10)
    }

    async fn stop(self, worker: RunningWorker) {
        worker.shutdown().await;
        assert_eq!(self.state.outbox(10).await.unwrap(), Vec::new());
    }

    async fn restart(&mut self, worker: RunningWorker) {
        // Memory outlives the worker, as files and servers outlive a process.
        worker.shutdown().await;
    }
}

// ---- Distributed: Pulsar + PostgreSQL ----------------------------------------------------

/// Workers on a Pulsar transport (topics and subscription of their own) with their state in
/// PostgreSQL (a schema of its own).
#[cfg(all(feature = "postgres", feature = "pulsar"))]
pub struct Distributed {
    transport: infinitic::store::pulsar::PulsarTransport,
    state: infinitic::PostgresStore,
    /// The server's URL and the schema, to connect again.
    pg: (String, String),
}

#[cfg(all(feature = "postgres", feature = "pulsar"))]
impl Distributed {
    /// `None` (skipped, with a message) when a server is missing and CI is not set.
    async fn new(test: &str) -> Option<Self> {
        use infinitic::store::pulsar::PulsarTransport;
        let server = pg::server()?;
        let url = pulsar::url()?;
        let schema = pg::unique(test);
        let state = server.store(&schema).await;
        let transport = PulsarTransport::connect(pulsar::fresh(&url))
            .await
            .unwrap_or_else(|e| panic!("connect to the test Pulsar broker at {url}: {e}"));
        Some(Self {
            transport,
            state,
            pg: (server.url, schema),
        })
    }
}

#[cfg(all(feature = "postgres", feature = "pulsar"))]
impl Deployment for Distributed {
    type T = infinitic::store::pulsar::PulsarTransport;
    type S = infinitic::PostgresStore;

    fn start(
        &self,
        retry: RetryPolicy,
        register: impl FnOnce(Worker<Self::T, Self::S>) -> Worker<Self::T, Self::S>,
    ) -> RunningWorker {
        register(Worker::with_backends(
            self.transport.clone(),
            self.state.clone(),
        ))
        .config(WorkerConfig {
            retry,
            poll_interval: Duration::from_millis(20),
            task_timeout: Duration::from_secs(10),
            task_lease_margin: Duration::from_secs(10),
            // The database's clock, as distributed workers run (timers due by one clock).
            clock: self.state.clock(),
            ..WorkerConfig::default()
        })
        .start()
    }

    fn client(&self) -> Client<Self::S> {
        Client::with_backends(self.transport.clone(), self.state.clone())
            .with_clock(self.state.clock())
    }

    async fn other_client(&self) -> Client<Self::S> {
        use infinitic::store::pulsar::PulsarTransport;
        let (url, schema) = &self.pg;
        let reader = pg::read_only_role(url, schema);
        let state = infinitic::PostgresStore::connect(&reader, pg::options(schema))
            .await
            .unwrap_or_else(|e| panic!("connect as a reader: {e}"));
        let transport = PulsarTransport::connect(self.transport.options().clone())
            .await
            .unwrap();
        Client::with_backends(transport, state)
    }

    fn transport(&self) -> &Self::T {
        &self.transport
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn stop(self, worker: RunningWorker) {
        worker.shutdown().await;
        self.transport.close().await;
        // Every commit's messages were relayed to the broker.
        assert_eq!(self.state.outbox(10).await.unwrap(), Vec::new());
    }

    async fn restart(&mut self, worker: RunningWorker) {
        use infinitic::store::pulsar::PulsarTransport;
        worker.shutdown().await;
        self.transport.close().await;
        let options = self.transport.options().clone();
        self.transport = PulsarTransport::connect(options).await.unwrap();
        let (url, schema) = &self.pg;
        self.state = infinitic::PostgresStore::connect(url, pg::options(schema))
            .await
            .unwrap();
    }
}

/// Runs each case on every deployment: `embedded::MODULE::CASE` and, with the features,
/// `distributed::MODULE::CASE`.
macro_rules! on_every_deployment {
    ($($module:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        mod embedded {
            $(mod $module {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let name = concat!(stringify!($module), "-", stringify!($case));
                    crate::$module::$case(crate::Embedded::new(name)).await
                })*
            })*
        }
        mod split {
            $(mod $module {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::$module::$case(crate::Split::new()).await
                })*
            })*
        }
        #[cfg(all(feature = "postgres", feature = "pulsar"))]
        mod distributed {
            $(mod $module {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(d) = crate::Distributed::new(stringify!($case)).await else {
                        return;
                    };
                    crate::$module::$case(d).await
                })*
            })*
        }
    };
}

on_every_deployment!(
    billing: [bills_short_months_and_skips_declined_payments],
    retries: [
        a_failing_service_is_retried_until_it_succeeds,
        a_service_that_always_fails_fails_the_step_after_the_policys_attempts,
    ],
    timers: [a_timer_never_fires_early],
    children: [a_parent_awaits_two_children_and_combines_their_results],
    clients: [
        another_process_awaits_results_by_id,
        waiting_clients_learn_of_parks_and_failed_starts,
    ],
    dead_letter: [a_method_the_worker_lacks_is_unknown_and_dead_lettered],
    bad_input: [garbage_on_our_topics_is_dead_lettered_and_workers_go_on],
    restart: [new_workers_take_over_a_workflow_waiting_on_a_timer],
);
