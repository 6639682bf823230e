//! Crash test: a worker in a child process runs 200 workflows while the test SIGKILLs it and
//! restarts it, at random moments and on observed progress: once after the first workflows
//! completed, and once with 90% of them done. Each workflow calls a service a few times,
//! sleeps on a durable timer, awaits a child workflow that calls the service too, and calls
//! the service once more; one in twenty then polls a gate (a service, between timers) that
//! the test opens only after its late kill, so that kill lands with workflows still running.
//! Every workflow, parent or child, must finish with the right result, no step result may be
//! applied twice (checked on the stored histories), and the services must see stable task
//! ids, re-executed only for tasks in flight at a kill.

use infinitic::prelude::*;
use infinitic::store::sqlite::OpenMode;
use infinitic::Transport;
use infinitic::{
    Client, Command, HistoryEvent, SqliteStore, StateStore, Worker, WorkerConfig, WorkflowId,
    WorkflowState,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Top-level workflows.
const WORKFLOWS: u64 = 200;
/// Service calls of each child workflow.
const CHILD_STEPS: u64 = 4;
/// How often a gated workflow asks the gate again.
const GATE_POLL: Duration = Duration::from_millis(50);
const CONCURRENCY: usize = 16;
/// Workflow events applied per commit: finished tasks waiting for that commit are in flight too.
const BATCH: usize = 32;

/// What top-level workflow `i` does, read by the workflow itself and by the checks.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Service calls before the timer.
    before: u64,
    /// The timer's duration.
    timer: Duration,
    /// Whether it waits for the gate at the end.
    gated: bool,
}

fn shape(i: u64) -> Shape {
    Shape {
        before: 2 + i % 9,
        timer: Duration::from_millis(20 + 20 * (i % 5)),
        gated: i % 20 == 19,
    }
}

/// What workflow `i` returns: every step adds one to `i * 1000`.
fn expected_result(i: u64) -> u64 {
    i * 1000 + shape(i).before + CHILD_STEPS + 1
}

#[service]
pub trait Counter {
    async fn increment(&self, n: u64) -> u64;
}

#[service]
pub trait Gate {
    async fn is_open(&self) -> bool;
}

/// Appends `task-id attempt` per execution, one `write` each, so a SIGKILL loses no line.
struct ExecutionLog(Mutex<std::fs::File>);

impl ExecutionLog {
    fn record(&self) {
        let task = infinitic::task::current().expect("run as a task");
        let line = format!("{} {}\n", task.id, task.attempt);
        self.0
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .expect("log the execution");
    }
}

struct LoggingCounter(Arc<ExecutionLog>);

impl Counter for LoggingCounter {
    async fn increment(&self, n: u64) -> u64 {
        self.0.record();
        // Keep tasks in flight long enough for kills to land mid-step.
        tokio::time::sleep(Duration::from_millis(2)).await;
        n + 1
    }
}

/// Open once its file exists.
struct FileGate {
    log: Arc<ExecutionLog>,
    path: PathBuf,
}

impl Gate for FileGate {
    async fn is_open(&self) -> bool {
        self.log.record();
        self.path.exists()
    }
}

#[workflow]
pub trait Chain {
    async fn run(&self, i: u64) -> u64;
}

#[derive(Default)]
pub struct ChainImpl {
    counter: CounterStub,
    gate: GateStub,
    leg: LegStub,
}

#[workflow]
impl Chain for ChainImpl {
    async fn run(&self, i: u64) -> u64 {
        let shape = shape(i);
        let mut n = i * 1000;
        for _ in 0..shape.before {
            n = match self.counter.increment(n).await {
                Ok(next) => next,
                Err(_) => return u64::MAX,
            };
        }
        workflow::sleep(shape.timer).await;
        n = match self.leg.run(n).await {
            Ok(next) => next,
            Err(_) => return u64::MAX - 1,
        };
        n = match self.counter.increment(n).await {
            Ok(next) => next,
            Err(_) => return u64::MAX,
        };
        if shape.gated {
            loop {
                match self.gate.is_open().await {
                    Ok(true) => break,
                    Ok(false) => workflow::sleep(GATE_POLL).await,
                    Err(_) => return u64::MAX - 2,
                }
            }
        }
        n
    }
}

/// The child workflow: `CHILD_STEPS` service calls.
#[workflow]
pub trait Leg {
    async fn run(&self, start: u64) -> u64;
}

#[derive(Default)]
pub struct LegImpl {
    counter: CounterStub,
}

#[workflow]
impl Leg for LegImpl {
    async fn run(&self, start: u64) -> u64 {
        let mut n = start;
        for _ in 0..CHILD_STEPS {
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

/// The child process: runs a worker until killed or interrupted. Started by the tests below
/// through this same test binary; does nothing when run on its own.
#[test]
#[ignore = "run as a child process by the tests of this file"]
fn crash_worker_child() {
    let (Ok(db), Ok(log), Ok(gate)) = (
        std::env::var("CRASH_DB"),
        std::env::var("CRASH_LOG"),
        std::env::var("CRASH_GATE"),
    ) else {
        return;
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let log = Arc::new(ExecutionLog(Mutex::new(log)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&db, OpenMode::MustExist).unwrap();
        // Until SIGKILL (crash) or Ctrl-C / SIGTERM (graceful stop).
        Worker::new(store)
            .service(CounterDispatcher::new(LoggingCounter(log.clone())))
            .service(GateDispatcher::new(FileGate {
                log,
                path: gate.into(),
            }))
            .workflow(ChainImpl::default)
            .workflow(LegImpl::default)
            .config(worker_config())
            .run_until_signal()
            .await;
    });
}

/// The id the runtime gives the child of top-level workflow `i`: its parent's command id.
fn child_id(parent: &WorkflowId, i: u64) -> WorkflowId {
    WorkflowId::new(format!("{parent}/0/{}", shape(i).before + 1))
}

/// A step of a stored history, by command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Increment,
    GateCheck,
    Timer,
    Child,
}

/// The steps of a stored history, checked: positions scheduled once each, in order from 0, and
/// each completed exactly once; a timer never completes before its time.
fn checked_steps(id: &WorkflowId, history: &[HistoryEvent]) -> Vec<Step> {
    let mut scheduled = Vec::new();
    let mut completed: BTreeMap<u32, usize> = BTreeMap::new();
    let mut fire_at = BTreeMap::new();
    for event in history {
        match event {
            HistoryEvent::Scheduled(record) => {
                if let Command::StartTimer { fire_at: at } = &record.command {
                    fire_at.insert(record.position, *at);
                }
                scheduled.push(record);
            }
            HistoryEvent::Completed(c) => {
                *completed.entry(c.position).or_default() += 1;
                if let Some(at) = fire_at.get(&c.position) {
                    assert!(c.at >= *at, "{id}: timer {} fired early", c.position);
                }
            }
            HistoryEvent::Signaled(_) => panic!("{id}: this workflow takes no signal"),
        }
    }
    let positions: Vec<u32> = scheduled.iter().map(|r| r.position).collect();
    assert_eq!(
        positions,
        (0..scheduled.len() as u32).collect::<Vec<_>>(),
        "{id}: each position scheduled once, in order"
    );
    assert!(
        completed.keys().copied().eq(positions.iter().copied())
            && completed.values().all(|&n| n == 1),
        "{id}: a step result was applied twice or not at all: {completed:?}"
    );
    scheduled
        .iter()
        .map(|record| match &record.command {
            Command::CallService {
                service, method, ..
            } => match (service.as_ref(), method.as_ref()) {
                ("Counter", "increment") => Step::Increment,
                ("Gate", "is_open") => Step::GateCheck,
                other => panic!("{id}: unexpected call {other:?}"),
            },
            Command::StartTimer { .. } => Step::Timer,
            Command::StartChild {
                workflow, method, ..
            } => {
                assert_eq!((workflow.as_ref(), method.as_ref()), ("Leg", "run"), "{id}");
                Step::Child
            }
            other => panic!("{id}: this workflow makes no {other:?}"),
        })
        .collect()
}

/// A store shared by this test process (the client) and worker child processes, with
/// `WORKFLOWS` chains dispatched (`{prefix}-{i}` runs `Chain::run(i)`) and the gate closed.
struct Fixture {
    dir: PathBuf,
    db: PathBuf,
    log: PathBuf,
    gate: PathBuf,
    runtime: tokio::runtime::Runtime,
    store: SqliteStore,
    client: Client<SqliteStore>,
    ids: Vec<WorkflowId>,
    /// Top-level workflows not yet seen completed (completion is final: never asked again).
    pending: Mutex<Vec<WorkflowId>>,
    /// Worker processes started so far.
    processes: Mutex<usize>,
}

/// A worker process killed by the test, and what was done when it died.
#[derive(Debug)]
struct Kill {
    /// What the kill waited for.
    trigger: String,
    /// Top-level workflows completed when the process started.
    from: usize,
    /// Top-level workflows completed at the kill (counted after it: nothing ran meanwhile).
    done: usize,
    /// Child workflows completed at the kill.
    children_done: usize,
    /// Since the first worker started.
    at: Duration,
}

/// When to kill a worker process.
enum Until {
    /// This long after its start.
    Elapsed(Duration),
    /// Once at least `at_least` top-level workflows are seen completed, and `more` of them
    /// by this process: it is killed while it works, in the phase the count names.
    Done { at_least: usize, more: usize },
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
                    .dispatch_with_id(id.clone(), ChainStub.run(i as u64))
                    .await
                    .unwrap();
            }
        });
        Self {
            log: dir.join("executions.log"),
            gate: dir.join("gate-open"),
            dir,
            db,
            runtime,
            store,
            client,
            pending: Mutex::new(ids.clone()),
            ids,
            processes: Mutex::new(0),
        }
    }

    fn spawn_worker(&self) -> std::process::Child {
        *self.processes.lock().unwrap() += 1;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("workers.stderr"))
            .unwrap();
        Process::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_worker_child",
                "--test-threads=1",
            ])
            .env("CRASH_DB", &self.db)
            .env("CRASH_LOG", &self.log)
            .env("CRASH_GATE", &self.gate)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the worker process")
    }

    /// Fails the test if a worker process stopped by itself.
    fn assert_alive(&self, child: &mut std::process::Child) {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(self.dir.join("workers.stderr")).unwrap();
            panic!("the worker process exited by itself ({status}):\n{stderr}");
        }
    }

    fn open_gate(&self) {
        std::fs::write(&self.gate, b"").unwrap();
    }

    /// Top-level workflows completed; asks only about those not yet seen completed.
    fn completed(&self) -> usize {
        let mut pending = self.pending.lock().unwrap();
        let still = self.runtime.block_on(async {
            let mut still = Vec::with_capacity(pending.len());
            for id in pending.drain(..) {
                match self.client.status(&id).await.unwrap() {
                    Some(WorkflowState::Completed(_)) => {}
                    Some(state @ (WorkflowState::Parked(_) | WorkflowState::Failed(_))) => {
                        panic!("{id} is {state:?}")
                    }
                    _ => still.push(id),
                }
            }
            still
        });
        *pending = still;
        WORKFLOWS as usize - pending.len()
    }

    fn children_completed(&self) -> usize {
        self.runtime.block_on(async {
            let mut done = 0;
            for (i, id) in self.ids.iter().enumerate() {
                let child = child_id(id, i as u64);
                if let Some(WorkflowState::Completed(_)) = self.client.status(&child).await.unwrap()
                {
                    done += 1;
                }
            }
            done
        })
    }

    /// Runs a worker process until `until`, then SIGKILLs it.
    fn run_and_kill(&self, until: Until, started: Instant) -> Kill {
        let from = self.completed();
        let mut child = self.spawn_worker();
        let trigger = match until {
            Until::Elapsed(wait) => {
                std::thread::sleep(wait);
                format!("after {wait:?}")
            }
            Until::Done { at_least, more } => {
                let target = at_least.max(from + more);
                let deadline = Instant::now() + Duration::from_secs(60);
                while self.completed() < target {
                    self.assert_alive(&mut child);
                    assert!(
                        Instant::now() < deadline,
                        "{target} workflows did not complete in time ({} did)",
                        self.completed()
                    );
                    std::thread::sleep(Duration::from_millis(15));
                }
                format!("done >= {target}")
            }
        };
        self.assert_alive(&mut child);
        child.kill().expect("SIGKILL the worker");
        child.wait().unwrap();
        Kill {
            trigger,
            from,
            done: self.completed(),
            children_done: self.children_completed(),
            at: started.elapsed(),
        }
    }

    /// Opens the gate and runs a worker until every workflow completed, then kills it
    /// (nothing is in flight).
    fn finish_all(&self) {
        self.open_gate();
        let mut child = self.spawn_worker();
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.completed() < WORKFLOWS as usize {
            self.assert_alive(&mut child);
            assert!(
                Instant::now() < deadline,
                "workflows did not all finish in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Checks every workflow, parents and children, finished with the right result and the
    /// expected steps, each applied once. Returns the ids of the tasks the services should have
    /// seen, and how often the gate was asked.
    fn check_histories(&self) -> (BTreeSet<String>, usize) {
        let mut tasks = BTreeSet::new();
        let mut gate_checks = 0;
        self.runtime.block_on(async {
            for (i, id) in self.ids.iter().enumerate() {
                let i = i as u64;
                let shape = shape(i);
                let stored = self.store.load(id, true).await.unwrap().unwrap();
                let WorkflowState::Completed(bytes) = &stored.state else {
                    panic!("{id} is {:?}", stored.state);
                };
                let result: u64 = infinitic::decode(bytes).unwrap();
                assert_eq!(result, expected_result(i), "{id}");
                let steps = checked_steps(id, &stored.history);
                let mut fixed = vec![Step::Increment; shape.before as usize];
                fixed.extend([Step::Timer, Step::Child, Step::Increment]);
                assert_eq!(steps[..fixed.len().min(steps.len())], fixed[..], "{id}");
                // Gated: asks the gate, and sleeps between a closed answer and the next ask.
                let gating = &steps[fixed.len()..];
                if shape.gated {
                    assert!(
                        gating.len() % 2 == 1
                            && gating.iter().enumerate().all(|(k, step)| {
                                *step
                                    == if k % 2 == 0 {
                                        Step::GateCheck
                                    } else {
                                        Step::Timer
                                    }
                            }),
                        "{id}: {gating:?}"
                    );
                    gate_checks += gating.len().div_ceil(2);
                } else {
                    assert!(gating.is_empty(), "{id}: {gating:?}");
                }
                for (position, step) in steps.iter().enumerate() {
                    if matches!(step, Step::Increment | Step::GateCheck) {
                        tasks.insert(format!("{id}/0/{position}"));
                    }
                }

                let child = child_id(id, i);
                let stored = self.store.load(&child, true).await.unwrap().unwrap();
                let WorkflowState::Completed(bytes) = &stored.state else {
                    panic!("{child} is {:?}", stored.state);
                };
                let result: u64 = infinitic::decode(bytes).unwrap();
                assert_eq!(result, expected_result(i) - 1, "{child}");
                assert_eq!(
                    stored.header.parent.as_ref().map(|p| p.command.to_string()),
                    Some(child.to_string()),
                    "{child}: started by its parent's step"
                );
                let steps = checked_steps(&child, &stored.history);
                assert_eq!(
                    steps,
                    vec![Step::Increment; CHILD_STEPS as usize],
                    "{child}"
                );
                for position in 0..CHILD_STEPS {
                    tasks.insert(format!("{child}/0/{position}"));
                }
            }
            let letters = self.store.dead_letters(10).await.unwrap();
            assert!(letters.is_empty(), "dead letters: {letters:?}");
        });
        (tasks, gate_checks)
    }

    /// Attempt numbers of each execution, by task id, from the services' log.
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
    /// A number in `lo..hi`.
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (self.0 >> 33) % (hi - lo)
    }

    fn random_time(&mut self) -> Until {
        Until::Elapsed(Duration::from_millis(self.next(40, 400)))
    }
}

#[test]
fn workflows_survive_repeated_sigkill_of_their_worker() {
    let f = Fixture::new("chain");
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("kill schedule seed: {seed} (CRASH_SEED={seed} replays it)");
    let mut schedule = Schedule(seed);
    let n = WORKFLOWS as usize;
    // With 90% done: the gated workflows (one in twenty) cannot finish before the gate opens.
    let late = (n * 9).div_ceil(10);
    let plan = [
        schedule.random_time(),
        schedule.random_time(),
        schedule.random_time(),
        // Some workflows done, most not.
        Until::Done {
            at_least: 1,
            more: schedule.next(1, n as u64 / 10) as usize,
        },
        schedule.random_time(),
        Until::Done {
            at_least: late + schedule.next(0, (n / 20 - 1) as u64) as usize,
            more: 1,
        },
    ];
    let started = Instant::now();
    let mut kills: Vec<Kill> = plan
        .into_iter()
        .map(|until| f.run_and_kill(until, started))
        .collect();
    f.open_gate();
    kills.push(f.run_and_kill(schedule.random_time(), started));
    for kill in &kills {
        println!(
            "kill at {:>7.1?} ({}): {} (from {}) of {n} workflows and {} children completed",
            kill.at, kill.trigger, kill.done, kill.from, kill.children_done
        );
    }
    f.finish_all();
    println!(
        "all {n} completed {:.1?} after the first start",
        started.elapsed()
    );
    // Phases reached by a process that was completing workflows when it died.
    let working =
        |phase: &dyn Fn(usize) -> bool| kills.iter().any(|k| k.from < k.done && phase(k.done));
    let done: Vec<(usize, usize)> = kills.iter().map(|k| (k.from, k.done)).collect();
    assert!(
        working(&|d| 0 < d && d < n),
        "a kill must land with some workflows completed and others running: {done:?}"
    );
    assert!(
        working(&|d| late <= d && d < n),
        "a kill must land with at least 90% of the workflows completed, not all: {done:?}"
    );

    // Right results, and each step applied exactly once.
    let (expected, gate_checks) = f.check_histories();

    // Stable task ids; re-executions only for tasks in flight at a kill.
    let executions = f.executions();
    // Within one worker process a task runs at most once (its lease outlives it), so a task
    // can only run again after a kill: at most once per worker process started.
    let processes = *f.processes.lock().unwrap();
    for (task, seen) in &executions {
        assert!(
            seen.len() <= processes,
            "{task} ran {} times (attempts {seen:?}) across {processes} worker processes",
            seen.len()
        );
    }
    let seen: BTreeSet<String> = executions.keys().cloned().collect();
    assert_eq!(
        seen, expected,
        "every task ran under its stable id, and no other id appeared"
    );
    let reexecuted = executions.values().filter(|runs| runs.len() > 1).count();
    let extra: usize = executions.values().map(|runs| runs.len() - 1).sum();
    println!(
        "task executions: {} for {} tasks ({gate_checks} gate checks); {reexecuted} tasks re-executed ({extra} extra runs) over {} kills",
        expected.len() + extra,
        expected.len(),
        kills.len()
    );
    // In flight at a kill: tasks running, plus tasks handed over or finished whose commits were
    // not yet durable (the batch being computed and the batches being committed).
    let in_flight = CONCURRENCY + BATCH * (1 + worker_config().commits_in_flight);
    assert!(
        extra <= kills.len() * in_flight,
        "re-executions ({extra}) exceed the tasks that can be in flight at {} kills",
        kills.len()
    );
}

#[test]
fn ctrl_c_stops_a_worker_gracefully_losing_and_repeating_nothing() {
    let f = Fixture::new("sigint");
    let mut child = f.spawn_worker();
    std::thread::sleep(Duration::from_millis(400));
    let interrupted = Process::new("kill")
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
    let (expected, _) = f.check_histories();
    let executions = f.executions();
    let seen: BTreeSet<String> = executions.keys().cloned().collect();
    assert_eq!(seen, expected, "every task ran under its stable id");
    let repeated: Vec<_> = executions
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .collect();
    assert!(
        repeated.is_empty(),
        "re-run after a graceful stop: {repeated:?}"
    );
    println!(
        "graceful stop with {done_at_stop} of {} done; every task ran exactly once",
        WORKFLOWS
    );
}
