//! Worker behaviour on the embedded store: retries with backoff, per-attempt timeouts, panics,
//! cold replay when nothing is cached, graceful shutdown and resume.

use infinitic::prelude::*;
use infinitic::store::memory::MemoryStore;
use infinitic::store::memory_state::MemoryStateStore;
use infinitic::store::sqlite::Durability;
use infinitic::store::sqlite::OpenMode;
use infinitic::{Client, RetryPolicy, SqliteStore, StateStore, Transport, Worker, WorkerConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[service]
pub trait Flaky {
    /// Fails until it has been called `fail_first + 1` times in all, then returns `n + 1`.
    async fn call(&self, n: u64, fail_first: u32) -> Result<u64, String>;
    async fn explode(&self) -> u64;
    async fn hang(&self) -> u64;
}

#[derive(Clone, Default)]
struct FlakyImpl {
    calls: Arc<AtomicU32>,
    attempts_seen: Arc<std::sync::Mutex<Vec<u32>>>,
}

impl Flaky for FlakyImpl {
    async fn call(&self, n: u64, fail_first: u32) -> Result<u64, String> {
        let attempt = infinitic::task::current().unwrap().attempt;
        self.attempts_seen.lock().unwrap().push(attempt);
        let calls = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if calls <= fail_first {
            Err(format!("failure {calls}"))
        } else {
            Ok(n + 1)
        }
    }

    async fn explode(&self) -> u64 {
        panic!("kaboom")
    }

    async fn hang(&self) -> u64 {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        0
    }
}

#[workflow]
pub trait Steps {
    async fn run(&self, case: u8) -> String;
}

#[derive(Default)]
pub struct StepsImpl {
    flaky: FlakyStub,
}

#[workflow]
impl Steps for StepsImpl {
    async fn run(&self, case: u8) -> String {
        match case {
            0 => format!("{:?}", self.flaky.call(1, 2).await),
            1 => format!("{:?}", self.flaky.call(1, 100).await),
            2 => format!("{:?}", self.flaky.explode().await),
            3 => format!("{:?}", self.flaky.hang().await),
            _ => {
                let mut n = 0;
                for _ in 0..20 {
                    n = self.flaky.call(n, 0).await.unwrap_or(0);
                    workflow::sleep(Duration::from_millis(1)).await;
                }
                format!("{n}")
            }
        }
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(20),
            multiplier: 2.0,
            max_delay: Duration::from_secs(1),
            jitter: 0.0,
        },
        task_timeout: Duration::from_millis(200),
        task_lease_margin: Duration::from_millis(300),
        poll_interval: Duration::from_millis(5),
        ..WorkerConfig::default()
    }
}

fn memory_store() -> SqliteStore {
    SqliteStore::open_with(":memory:", OpenMode::CreateIfMissing, Durability::InMemory).unwrap()
}

async fn run_case<S: Transport + StateStore + Clone>(
    store: S,
    flaky: FlakyImpl,
    config: WorkerConfig,
    case: u8,
) -> String {
    let worker = Worker::new(store.clone())
        .service(FlakyDispatcher::new(flaky))
        .workflow(StepsImpl::default)
        .config(config)
        .start();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        Client::new(store).run(StepsStub.run(case)),
    )
    .await
    .expect("finishes")
    .expect("completes");
    worker.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_retried_with_backoff_until_it_succeeds() {
    let flaky = FlakyImpl::default();
    let started = std::time::Instant::now();
    let result = run_case(memory_store(), flaky.clone(), config(), 0).await;
    assert_eq!(result, "Ok(2)");
    assert_eq!(*flaky.attempts_seen.lock().unwrap(), vec![1, 2, 3]);
    // Backoff of 20 ms then 40 ms between the attempts.
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "{:?}",
        started.elapsed()
    );
}

/// The workers need nothing of SQLite: the same retries, on the plain in-memory backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_run_on_the_plain_in_memory_backend() {
    let flaky = FlakyImpl::default();
    let result = run_case(MemoryStore::new(), flaky.clone(), config(), 0).await;
    assert_eq!(result, "Ok(2)");
    assert_eq!(*flaky.attempts_seen.lock().unwrap(), vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_give_up_with_the_services_typed_error() {
    let result = run_case(memory_store(), FlakyImpl::default(), config(), 1).await;
    assert_eq!(result, r#"Err(Failed { error: "failure 3", attempts: 3 })"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_service_becomes_a_failure_and_the_worker_survives() {
    let store = memory_store();
    let result = run_case(store.clone(), FlakyImpl::default(), config(), 2).await;
    assert!(result.starts_with("Err(Panicked"), "{result}");
    assert!(
        result.contains("kaboom") && result.contains("attempts: 3"),
        "{result}"
    );
    assert_eq!(
        run_case(store, FlakyImpl::default(), config(), 0).await,
        "Ok(2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_exceeds_its_timeout_times_out() {
    let result = run_case(memory_store(), FlakyImpl::default(), config(), 3).await;
    assert_eq!(result, "Err(TimedOut { attempts: 3 })");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_cache_every_event_replays_history_and_the_result_is_the_same() {
    let cold = WorkerConfig {
        cache_capacity: 0,
        ..config()
    };
    let store = memory_store();
    let result = run_case(store.clone(), FlakyImpl::default(), cold, 4).await;
    assert_eq!(result, "20");
    let sticky = run_case(memory_store(), FlakyImpl::default(), config(), 4).await;
    assert_eq!(sticky, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_mid_run_loses_nothing_and_a_new_worker_resumes_at_once() {
    let path = std::env::temp_dir().join(format!("infinitic-graceful-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = SqliteStore::open(&path, OpenMode::CreateIfMissing).unwrap();
    let client = Client::new(store.clone());
    let handles: Vec<_> = dispatch_twenty(&client).await;
    let worker = Worker::new(store.clone())
        .service(FlakyDispatcher::new(FlakyImpl::default()))
        .workflow(StepsImpl::default)
        .config(config())
        .start();
    tokio::time::sleep(Duration::from_millis(30)).await;
    worker.shutdown().await;
    let mut unfinished = 0;
    for h in &handles {
        if h.try_result().await.unwrap().is_none() {
            unfinished += 1;
        }
    }
    assert!(unfinished > 0, "the shutdown should land mid-run");
    // A new worker (same store) finishes them without waiting for leases to expire.
    let started = std::time::Instant::now();
    let worker = Worker::new(store.clone())
        .service(FlakyDispatcher::new(FlakyImpl::default()))
        .workflow(StepsImpl::default)
        .config(WorkerConfig {
            workflow_lease: Duration::from_secs(60),
            task_lease_margin: Duration::from_secs(60),
            ..config()
        })
        .start();
    for h in &handles {
        let out = tokio::time::timeout(Duration::from_secs(10), h.result())
            .await
            .expect("resumed without waiting for a lease")
            .unwrap();
        assert_eq!(out, "20");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    worker.shutdown().await;
    for h in &handles {
        let stored = store.load(h.id(), true).await.unwrap().unwrap();
        let completions = stored
            .history
            .iter()
            .filter(|e| matches!(e, infinitic::HistoryEvent::Completed(_)))
            .count();
        assert_eq!(completions, 40, "20 calls and 20 timers, each applied once");
    }
}

async fn dispatch_twenty(
    client: &Client<SqliteStore>,
) -> Vec<infinitic::WorkflowHandle<String, SqliteStore>> {
    let mut handles = Vec::new();
    for i in 0..20 {
        handles.push(
            client
                .dispatch_with_id(format!("graceful-{i}"), StepsStub.run(4))
                .await
                .unwrap(),
        );
    }
    handles
}

#[workflow]
pub trait Parent {
    async fn run(&self, n: u64) -> Result<u64, String>;
}

#[derive(Default)]
pub struct ParentImpl {
    child: StepsStub,
    flaky: FlakyStub,
}

#[workflow]
impl Parent for ParentImpl {
    async fn run(&self, n: u64) -> Result<u64, String> {
        // Two children in parallel, then a step of the parent's own.
        let (a, b) = workflow::join2(self.child.run(4), self.child.run(0)).await;
        let a: u64 = a
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|_| "a".to_string())?;
        let b = b.map_err(|e| e.to_string())?;
        assert_eq!(b, "Ok(2)");
        self.flaky.call(n + a, 0).await.map_err(|e| e.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_workflows_run_on_the_embedded_store_and_report_to_their_parent() {
    let store = memory_store();
    let worker = Worker::new(store.clone())
        .service(FlakyDispatcher::new(FlakyImpl::default()))
        .workflow(StepsImpl::default)
        .workflow(ParentImpl::default)
        .config(config())
        .start();
    let client = Client::new(store.clone());
    let handle = client
        .dispatch_with_id("parent-1", ParentStub.run(100))
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), handle.result())
        .await
        .expect("finishes")
        .expect("completes");
    assert_eq!(result, Ok(121));
    // The children are instances of their own, with ids derived from the parent's commands.
    for (position, expected) in [(0, "20"), (1, "Ok(2)")] {
        let child = client.handle::<String>(format!("parent-1/0/{position}"));
        assert_eq!(child.result().await.unwrap(), expected);
    }
    worker.shutdown().await;
}

/// The shape of the distributed deployment, in memory: messages on one backend, workflow state
/// in another that publishes nothing itself. A relay publishes the state store's outbox,
/// consumed messages are settled on the transport after their commit, and children, retries
/// and results work as on one embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_run_on_a_separate_transport_and_state_store() {
    let (transport, state) = (MemoryStore::new(), MemoryStateStore::new());
    let flaky = FlakyImpl::default();
    let worker = Worker::with_backends(transport.clone(), state.clone())
        .service(FlakyDispatcher::new(flaky.clone()))
        .workflow(StepsImpl::default)
        .workflow(ParentImpl::default)
        .config(config())
        .start();
    let client = Client::with_backends(transport.clone(), state.clone());
    let retried = client.dispatch_with_id("steps-0", StepsStub.run(0));
    let retried = retried.await.unwrap();
    let parent = client
        .dispatch_with_id("parent-1", ParentStub.run(100))
        .await
        .unwrap();
    let within = Duration::from_secs(20);
    let retried = tokio::time::timeout(within, retried.result()).await;
    assert_eq!(retried.expect("finishes").expect("completes"), "Ok(2)");
    let parent = tokio::time::timeout(within, parent.result()).await;
    assert_eq!(parent.expect("finishes").expect("completes"), Ok(121));
    worker.shutdown().await;
    // Everything relayed and settled: nothing left in the outbox or on the transport.
    assert_eq!(state.outbox(10).await.unwrap(), Vec::new());
    let topics: Vec<String> = ["workflow:Steps", "workflow:Parent", "service:Flaky"]
        .map(String::from)
        .into();
    let left = transport
        .receive(&topics, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(left.deliveries, Vec::new(), "every message was settled");
    assert_eq!(left.next_visible_at, None, "nothing waits to be delivered");
    assert_eq!(transport.dead_letters(10).await.unwrap(), Vec::new());
}

/// A service worker needs no state store: services on one worker with none
/// (`Worker::services_only`), the workflow on another, both on one transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_worker_runs_without_a_state_store() {
    let (transport, state) = (MemoryStore::new(), MemoryStateStore::new());
    let flaky = FlakyImpl::default();
    let services = Worker::services_only(transport.clone())
        .service(FlakyDispatcher::new(flaky.clone()))
        .config(config())
        .start();
    let workflows = Worker::with_backends(transport.clone(), state.clone())
        .workflow(StepsImpl::default)
        .config(config())
        .start();
    let client = Client::with_backends(transport.clone(), state.clone());
    let handle = client
        .dispatch_with_id("steps-9", StepsStub.run(0))
        .await
        .unwrap();
    let result = handle.result_within(Duration::from_secs(20)).await;
    assert_eq!(result.expect("completes"), "Ok(2)");
    assert!(
        flaky.calls.load(Ordering::SeqCst) > 0,
        "the service worker ran the calls"
    );
    services.shutdown().await;
    workflows.shutdown().await;
}
