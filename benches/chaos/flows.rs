//! The chaos program's workflows and service, and what a worker process runs.
//!
//! `Root::run(n)`: a step, a durable timer, two child `Leaf` workflows in parallel, a step:
//! `21n + 108`. `Leaf::run(m)`: a step, a durable timer, a step: `m + 3`. Every step is
//! `Ledger::add`, which appends its task id and attempt to a shared file (its side effect)
//! before answering. Right after each timer, the workflow records the wall clock in an inline
//! step: when its code actually resumed, so the checks can tell a timer that fired early (a
//! timer's recorded completion carries its due time, not when it was delivered).

use infinitic::prelude::*;
use infinitic::store::postgres::{PostgresOptions, PostgresStore};
use infinitic::store::pulsar::{PulsarOptions, PulsarTransport};
use infinitic::task;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The root's timer.
pub const ROOT_TIMER: Duration = Duration::from_secs(2);
/// Each leaf's timer.
pub const LEAF_TIMER: Duration = Duration::from_secs(1);

/// What `Root::run(n)` returns.
pub fn expected(n: u64) -> u64 {
    21 * n + 108
}

#[service]
pub trait Ledger {
    /// `x + y`, recorded in the side-effect file.
    async fn add(&self, x: u64, y: u64) -> u64;
}

/// Appends `task-id attempt` lines to one file (O_APPEND: lines of every worker interleave
/// whole).
#[derive(Clone)]
pub struct LedgerImpl {
    file: Arc<Mutex<std::fs::File>>,
}

impl LedgerImpl {
    pub fn open(path: &PathBuf) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("side-effect file {}: {e}", path.display()));
        Self {
            file: Arc::new(Mutex::new(file)),
        }
    }
}

impl Ledger for LedgerImpl {
    async fn add(&self, x: u64, y: u64) -> u64 {
        let (id, attempt) =
            task::current().map_or((String::from("?"), 0), |t| (t.id.to_string(), t.attempt));
        let line = format!("{id} {attempt}\n");
        // One write call per line; a failure is a panic, so a failed task, retried.
        let mut file = self.file.lock().expect("the file lock");
        file.write_all(line.as_bytes())
            .expect("append to the side-effect file");
        x + y
    }
}

/// Records when the code resumed (ms since the epoch), as the step after a timer.
fn woke() -> u64 {
    workflow::inline(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

#[workflow]
pub trait Leaf {
    /// `m + 3`, in two steps around a timer.
    async fn run(&self, m: u64) -> Result<u64, String>;
}

#[derive(Default)]
pub struct LeafImpl {
    ledger: LedgerStub,
}

#[workflow]
impl Leaf for LeafImpl {
    async fn run(&self, m: u64) -> Result<u64, String> {
        let a = self.ledger.add(m, 1).await.map_err(|e| e.to_string())?;
        workflow::sleep(LEAF_TIMER).await;
        woke();
        self.ledger.add(a, 2).await.map_err(|e| e.to_string())
    }
}

#[workflow]
pub trait Root {
    /// `21n + 108`: a step, a timer, two leaves (`10n` and `10n + 1`), a step.
    async fn run(&self, n: u64) -> Result<u64, String>;
}

#[derive(Default)]
pub struct RootImpl {
    ledger: LedgerStub,
    leaf: LeafStub,
}

#[workflow]
impl Root for RootImpl {
    async fn run(&self, n: u64) -> Result<u64, String> {
        let a = self.ledger.add(n, 1).await.map_err(|e| e.to_string())?;
        workflow::sleep(ROOT_TIMER).await;
        woke();
        let (x, y) = workflow::join2(self.leaf.run(10 * n), self.leaf.run(10 * n + 1)).await;
        let x = x.map_err(|e| e.to_string())??;
        let y = y.map_err(|e| e.to_string())??;
        self.ledger
            .add(a + x + y, 100)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What a worker process connects to: passed by the orchestrator in the environment.
pub struct Backends {
    pub pg_url: String,
    pub schema: String,
    pub pulsar: PulsarOptions,
    pub effects: PathBuf,
}

impl Backends {
    pub const VARS: [&'static str; 6] = [
        "CHAOS_PG_URL",
        "CHAOS_PG_SCHEMA",
        "CHAOS_PULSAR_URL",
        "CHAOS_PULSAR_PREFIX",
        "CHAOS_PULSAR_SUBSCRIPTION",
        "CHAOS_EFFECTS",
    ];

    /// The environment a worker process gets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let values = [
            self.pg_url.clone(),
            self.schema.clone(),
            self.pulsar.url.clone(),
            self.pulsar.topic_prefix.clone(),
            self.pulsar.subscription.clone(),
            self.effects.display().to_string(),
        ];
        Self::VARS.into_iter().zip(values).collect()
    }

    /// Read back in the worker process.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
        Self {
            pg_url: var("CHAOS_PG_URL"),
            schema: var("CHAOS_PG_SCHEMA"),
            pulsar: PulsarOptions::new(var("CHAOS_PULSAR_URL"))
                .with_topic_prefix(var("CHAOS_PULSAR_PREFIX"))
                .with_subscription(var("CHAOS_PULSAR_SUBSCRIPTION")),
            effects: PathBuf::from(var("CHAOS_EFFECTS")),
        }
    }

    /// The state store, retried until the server answers (it may be down for a while).
    pub async fn state(&self) -> PostgresStore {
        let options = PostgresOptions {
            schema: self.schema.clone(),
            ..PostgresOptions::default()
        };
        loop {
            match PostgresStore::connect(&self.pg_url, options.clone()).await {
                Ok(store) => return store,
                Err(e) => eprintln!("worker {}: PostgreSQL: {e}; retrying", std::process::id()),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The transport, retried until the broker answers.
    pub async fn transport(&self) -> PulsarTransport {
        loop {
            match PulsarTransport::connect(self.pulsar.clone()).await {
                Ok(transport) => return transport,
                Err(e) => eprintln!("worker {}: Pulsar: {e}; retrying", std::process::id()),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The workers' configuration: retries outlast a database or broker outage.
pub fn config() -> WorkerConfig {
    WorkerConfig {
        retry: RetryPolicy {
            max_attempts: 30,
            initial_delay: Duration::from_millis(200),
            multiplier: 2.0,
            max_delay: Duration::from_secs(3),
            jitter: 0.1,
        },
        poll_interval: Duration::from_millis(20),
        task_timeout: Duration::from_secs(10),
        task_lease_margin: Duration::from_secs(10),
        ..WorkerConfig::default()
    }
}

/// Which worker a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Workflows,
    Services,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Workflows => "workflow-worker",
            Role::Services => "service-worker",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Role::Workflows, Role::Services]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// A worker process: runs `role` until its stdin closes (the orchestrator ended), or until
/// it is killed.
pub async fn worker_process(role: Role) {
    let backends = Backends::from_env();
    let state = backends.state().await;
    let transport = backends.transport().await;
    let worker = Worker::with_backends(transport.clone(), state).config(config());
    let worker = match role {
        Role::Workflows => worker
            .workflow(RootImpl::default)
            .workflow(LeafImpl::default),
        Role::Services => {
            worker.service(LedgerDispatcher::new(LedgerImpl::open(&backends.effects)))
        }
    }
    .start();
    // The orchestrator holds our stdin: EOF means it is gone or done.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(10), worker.shutdown()).await;
    transport.close().await;
}
