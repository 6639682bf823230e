//! Crash test: a worker in a child process runs 200 workflows of 10 steps while the test
//! SIGKILLs it at random moments and restarts it. Every workflow must finish with the right
//! result, no step result may be applied twice (checked on the stored histories), and the
//! service must see stable task ids, re-executed only for tasks in flight at a kill.

use infinitic::prelude::*;
use infinitic::store::sqlite::OpenMode;
use infinitic::{
    Client, HistoryEvent, SqliteStore, StateStore, Worker, WorkerConfig, WorkflowId, WorkflowState,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WORKFLOWS: u64 = 200;
const STEPS: u64 = 10;
const MIN_KILLS: u32 = 5;
const CONCURRENCY: usize = 16;
/// Workflow events applied per commit: finished tasks waiting for that commit are in flight too.
const BATCH: usize = 32;

#[service]
pub trait Counter {
    async fn increment(&self, n: u64) -> u64;
}

/// Appends `task-id attempt` per execution, one `write` each, so a SIGKILL loses no line.
struct LoggingCounter {
    log: Mutex<std::fs::File>,
}

impl Counter for LoggingCounter {
    async fn increment(&self, n: u64) -> u64 {
        let task = infinitic::task::current().expect("run as a task");
        let line = format!("{} {}\n", task.id, task.attempt);
        self.log
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .expect("log the execution");
        // Keep tasks in flight long enough for kills to land mid-step.
        tokio::time::sleep(Duration::from_millis(2)).await;
        n + 1
    }
}

#[workflow]
pub trait Chain {
    async fn run(&self, start: u64) -> u64;
}

#[derive(Default)]
pub struct ChainImpl {
    counter: CounterStub,
}

#[workflow]
impl Chain for ChainImpl {
    async fn run(&self, start: u64) -> u64 {
        let mut n = start;
        for _ in 0..STEPS {
            n = match self.counter.increment(n).await {
                Ok(next) => next,
                Err(_) => return u64::MAX,
            };
        }
        n
    }
}

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        service_concurrency: CONCURRENCY,
        workflow_batch: BATCH,
        task_timeout: Duration::from_secs(2),
        task_lease_margin: Duration::from_millis(500),
        workflow_lease: Duration::from_millis(500),
        poll_interval: Duration::from_millis(10),
        ..WorkerConfig::default()
    }
}

/// The child process: runs a worker until killed or interrupted. Started by the test below through this same
/// test binary; does nothing when run on its own.
#[test]
#[ignore = "run as a child process by workflows_survive_repeated_sigkill_of_their_worker"]
fn crash_worker_child() {
    let (Ok(db), Ok(log)) = (std::env::var("CRASH_DB"), std::env::var("CRASH_LOG")) else {
        return;
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&db, OpenMode::MustExist).unwrap();
        // Until SIGKILL (crash) or Ctrl-C / SIGTERM (graceful stop).
        Worker::new(store)
            .service(CounterDispatcher::new(LoggingCounter {
                log: Mutex::new(log),
            }))
            .workflow(ChainImpl::default)
            .config(worker_config())
            .run_until_signal()
            .await;
    });
}

/// A store shared by this test process (the client) and worker child processes, with
/// `WORKFLOWS` chains dispatched (`{prefix}-{i}` starts at `i * 1000`).
struct Fixture {
    dir: PathBuf,
    db: PathBuf,
    log: PathBuf,
    runtime: tokio::runtime::Runtime,
    store: SqliteStore,
    client: Client<SqliteStore>,
    ids: Vec<WorkflowId>,
}

impl Fixture {
    fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("infinitic-{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = dir.join("store.db");
        let store = SqliteStore::open(&db, OpenMode::CreateIfMissing).unwrap();
        let client = Client::new(store.clone());
        let ids: Vec<WorkflowId> = (0..WORKFLOWS)
            .map(|i| WorkflowId::new(format!("{prefix}-{i}")))
            .collect();
        runtime.block_on(async {
            for (i, id) in ids.iter().enumerate() {
                client
                    .dispatch_with_id(id.clone(), ChainStub.run(i as u64 * 1000))
                    .await
                    .unwrap();
            }
        });
        Self {
            log: dir.join("executions.log"),
            dir,
            db,
            runtime,
            store,
            client,
            ids,
        }
    }

    fn spawn_worker(&self) -> std::process::Child {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_worker_child",
                "--test-threads=1",
            ])
            .env("CRASH_DB", &self.db)
            .env("CRASH_LOG", &self.log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the worker process")
    }

    fn completed(&self) -> usize {
        self.runtime.block_on(async {
            let mut done = 0;
            for id in &self.ids {
                if let Some(WorkflowState::Completed(_)) = self.client.status(id).await.unwrap() {
                    done += 1;
                }
            }
            done
        })
    }

    /// Runs a worker until every workflow completed, then kills it (nothing is in flight).
    fn finish_all(&self) {
        let mut child = self.spawn_worker();
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.completed() < WORKFLOWS as usize {
            assert!(
                Instant::now() < deadline,
                "workflows did not all finish in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Attempt numbers of each execution, by task id, from the service's log.
    fn executions(&self) -> BTreeMap<String, Vec<u32>> {
        let text = std::fs::read_to_string(&self.log).unwrap();
        let mut executions: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for line in text.lines() {
            let (task, attempt) = line.split_once(' ').unwrap();
            executions
                .entry(task.to_string())
                .or_default()
                .push(attempt.parse().unwrap());
        }
        executions
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A small LCG: the kill schedule only needs to vary, and its seed is printed to replay it.
struct Schedule(u64);
impl Schedule {
    fn next_millis(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

#[test]
fn workflows_survive_repeated_sigkill_of_their_worker() {
    let f = Fixture::new("chain");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill schedule seed: {seed}");
    let mut schedule = Schedule(seed);
    let started = Instant::now();
    let mut kills = 0u32;
    let mut done_at_kill = Vec::new();
    while kills < MIN_KILLS + 2 {
        let mut child = f.spawn_worker();
        std::thread::sleep(Duration::from_millis(schedule.next_millis(40, 400)));
        child.kill().expect("SIGKILL the worker");
        child.wait().unwrap();
        kills += 1;
        done_at_kill.push(f.completed());
    }
    println!("kills: {kills}; workflows completed at each kill: {done_at_kill:?}");
    f.finish_all();
    println!(
        "all {WORKFLOWS} completed {:.1?} after the first start",
        started.elapsed()
    );
    assert!(
        done_at_kill.iter().any(|&d| d < WORKFLOWS as usize),
        "at least one kill must land while workflows are running: {done_at_kill:?}"
    );

    // Right results, and each step applied exactly once.
    f.runtime.block_on(async {
        for (i, id) in f.ids.iter().enumerate() {
            let stored = f.store.load(id, true).await.unwrap().unwrap();
            let WorkflowState::Completed(bytes) = &stored.state else {
                panic!("{id} is {:?}", stored.state);
            };
            let result: u64 = infinitic::decode(bytes).unwrap();
            assert_eq!(result, i as u64 * 1000 + STEPS, "{id}");
            let mut completed: BTreeMap<u32, usize> = BTreeMap::new();
            let mut scheduled = Vec::new();
            for event in &stored.history {
                match event {
                    HistoryEvent::Completed(c) => *completed.entry(c.position).or_default() += 1,
                    HistoryEvent::Scheduled(r) => scheduled.push(r.position),
                }
            }
            assert_eq!(scheduled, (0..STEPS as u32).collect::<Vec<_>>(), "{id}");
            assert!(
                completed.values().all(|&n| n == 1) && completed.len() == STEPS as usize,
                "{id}: a step result was applied twice or not at all: {completed:?}"
            );
        }
    });

    // Stable task ids; re-executions only for tasks in flight at a kill.
    let executions = f.executions();
    // Within one worker process a task runs at most once (its lease outlives it), so a task
    // can only run again after a kill: at most once per worker process started.
    let processes = kills as usize + 1;
    for (task, seen) in &executions {
        assert!(
            seen.len() <= processes,
            "{task} ran {} times (attempts {seen:?}) across {processes} worker processes",
            seen.len()
        );
    }
    let expected: BTreeSet<String> = f
        .ids
        .iter()
        .flat_map(|id| (0..STEPS).map(move |p| format!("{id}/0/{p}")))
        .collect();
    let seen: BTreeSet<String> = executions.keys().cloned().collect();
    assert_eq!(
        seen, expected,
        "every task ran under its stable id, and no other id appeared"
    );
    let reexecuted = executions.values().filter(|runs| runs.len() > 1).count();
    let extra: usize = executions.values().map(|runs| runs.len() - 1).sum();
    println!(
        "task executions: {} for {} tasks; {reexecuted} tasks re-executed ({extra} extra runs) over {kills} kills",
        expected.len() + extra,
        expected.len()
    );
    // In flight at a kill: tasks running, plus tasks handed over or finished whose commits were
    // not yet durable (the batch being computed and the batches being committed).
    let in_flight = CONCURRENCY + BATCH * (1 + worker_config().commits_in_flight);
    assert!(
        extra <= kills as usize * in_flight,
        "re-executions ({extra}) exceed the tasks that can be in flight at {kills} kills"
    );
}

#[test]
fn ctrl_c_stops_a_worker_gracefully_losing_and_repeating_nothing() {
    let f = Fixture::new("sigint");
    let mut child = f.spawn_worker();
    std::thread::sleep(Duration::from_millis(400));
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(interrupted.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "a graceful stop exits cleanly: {status:?}"
    );
    let done_at_stop = f.completed();
    assert!(
        done_at_stop < WORKFLOWS as usize,
        "the stop must land mid-run to show anything ({done_at_stop} done)"
    );
    f.finish_all();

    // Nothing in flight was dropped or run twice: each task ran exactly once.
    let executions = f.executions();
    assert_eq!(executions.len(), WORKFLOWS as usize * STEPS as usize);
    let repeated: Vec<_> = executions
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .collect();
    assert!(
        repeated.is_empty(),
        "re-run after a graceful stop: {repeated:?}"
    );
    println!("graceful stop with {done_at_stop} of {WORKFLOWS} done; every task ran exactly once");
}
