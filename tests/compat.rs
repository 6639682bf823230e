//! Compatibility with what earlier builds wrote (issue 8, item 6): a new build reads the stored
//! instances, histories and in-flight messages of the previous one.
//!
//! `tests/fixtures/v1/` holds files written by the format of schema version 1 and envelope
//! protocol version 1: encoded messages (`messages/*.bin`), encoded history events and states,
//! and a small store file (`store.db`) with instances in every stage and messages of every kind
//! still queued. The tests below read COPIES of them with the current build: every message
//! decodes to its value, every instance loads as written, and a worker with the same workflow
//! and service definitions carries every unfinished instance to its end, with the same task ids.
//!
//! The files were written by `write_fixtures` below, kept here so they can be understood and so
//! a later format can add its own folder:
//! `INFINITIC_FIXTURES=tests/fixtures/v2 cargo test --test compat -- --ignored write_fixtures`.
//! Never regenerate an existing version's folder: the point is to test against old bytes.

use infinitic::message::{decode_message, encode_message, Message, ParentStep};
use infinitic::prelude::*;
use infinitic::store::sqlite::OpenMode;
use infinitic::store::{Outgoing, StoredWorkflow, WorkflowHeader};
use infinitic::{
    decode, encode, Client, Command, CommandId, CommandRecord, Completion, HistoryEvent, MethodRun,
    SqliteStore, StateStore, StepOutcome, Timestamp, Transport, Worker, WorkerConfig, WorkflowId,
    WorkflowState,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[allow(dead_code)]
#[path = "support/dirs.rs"]
mod dirs;
use dirs::TempDir;

// ---------------------------------------------------------------------------------------------
// The definitions the fixtures were written with. Their names (traits, methods) and signatures
// are stored in the fixtures: keep them as they are.

/// Registered when the fixtures were written.
#[service]
pub trait Echo {
    async fn echo(&self, text: String) -> String;
}

/// A method the registered `Echo` does not have: its call is dead-lettered.
#[service(name = "Echo")]
pub trait EchoNext {
    async fn whisper(&self, text: String) -> String;
}

/// Not registered when the fixtures were written: its tasks stay queued.
#[service]
pub trait Ledger {
    async fn record(&self, entry: String) -> Result<u64, String>;
}

/// Completed in the fixture: one step that succeeds, one whose method is unknown.
#[workflow]
pub trait Greeting {
    async fn run(&self, name: String) -> String;
}

#[derive(Default)]
pub struct GreetingImpl {
    echo: EchoStub,
    next: EchoNextStub,
}

#[workflow]
impl Greeting for GreetingImpl {
    async fn run(&self, name: String) -> String {
        let greeting = self
            .echo
            .echo(format!("Hello, {name}!"))
            .await
            .unwrap_or_default();
        let whisper = match self.next.whisper(name).await {
            Ok(_) => "answered",
            Err(StepError::Unknown { .. }) => "unknown",
            Err(_) => "other failure",
        };
        format!("{greeting} (whisper: {whisper})")
    }
}

/// Running in the fixture, waiting on a durable timer that fires after the fixture was written.
#[workflow]
pub trait Sleeper {
    async fn run(&self, label: String) -> String;
}

#[derive(Default)]
pub struct SleeperImpl {
    echo: EchoStub,
}

/// How long `Sleeper` sleeps: the fixture is written well before its timer fires.
const SLEEP: Duration = Duration::from_secs(10);

#[workflow]
impl Sleeper for SleeperImpl {
    async fn run(&self, label: String) -> String {
        workflow::sleep(SLEEP).await;
        let echoed = self.echo.echo(label).await.unwrap_or_default();
        format!("slept, then {echoed}")
    }
}

/// Running in the fixture, waiting on a `Ledger` task that is queued.
#[workflow]
pub trait Waiter {
    async fn run(&self, entry: String) -> u64;
}

#[derive(Default)]
pub struct WaiterImpl {
    ledger: LedgerStub,
}

#[workflow]
impl Waiter for WaiterImpl {
    async fn run(&self, entry: String) -> u64 {
        self.ledger.record(entry).await.unwrap_or(u64::MAX)
    }
}

/// Running in the fixture, waiting on its child.
#[workflow]
pub trait Parent {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct ParentImpl {
    child: ChildStub,
}

#[workflow]
impl Parent for ParentImpl {
    async fn run(&self, n: u64) -> u64 {
        self.child.run(n).await.map_or(u64::MAX, |m| m + 1)
    }
}

/// Running in the fixture (the child of `Parent`), waiting on a queued `Ledger` task.
#[workflow]
pub trait Child {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct ChildImpl {
    ledger: LedgerStub,
}

#[workflow]
impl Child for ChildImpl {
    async fn run(&self, n: u64) -> u64 {
        match self.ledger.record(format!("child {n}")).await {
            Ok(receipt) => receipt + n,
            Err(_) => u64::MAX,
        }
    }
}

/// Parked in the fixture: its code panics.
#[workflow]
pub trait Fragile {
    async fn run(&self, reason: String) -> String;
}

#[derive(Default)]
pub struct FragileImpl;

#[workflow]
impl Fragile for FragileImpl {
    async fn run(&self, reason: String) -> String {
        panic!("fragile: {reason}")
    }
}

/// Pending in the fixture: not registered when it was written, so never started.
#[workflow]
pub trait Late {
    async fn run(&self, name: String) -> String;
}

#[derive(Default)]
pub struct LateImpl {
    echo: EchoStub,
}

#[workflow]
impl Late for LateImpl {
    async fn run(&self, name: String) -> String {
        self.echo
            .echo(format!("Hello, {name}!"))
            .await
            .unwrap_or_default()
    }
}

/// Records the id of every task it runs.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self) {
        self.0
            .lock()
            .unwrap()
            .push(infinitic::task::id().to_string());
    }

    fn sorted(&self) -> Vec<String> {
        let mut ids = self.0.lock().unwrap().clone();
        ids.sort();
        ids
    }
}

#[derive(Clone, Default)]
struct EchoImpl(Seen);

impl Echo for EchoImpl {
    async fn echo(&self, text: String) -> String {
        self.0.push();
        text
    }
}

#[derive(Clone, Default)]
struct LedgerImpl(Seen);

impl Ledger for LedgerImpl {
    /// A receipt number: 1000 plus the entry's length.
    async fn record(&self, entry: String) -> Result<u64, String> {
        self.0.push();
        Ok(1000 + entry.len() as u64)
    }
}

// The instances of the store fixture.
const COMPLETED: &str = "completed-1";
const PARKED: &str = "parked-1";
const TIMER: &str = "timer-1";
const WAITING: &str = "waiting-1";
const PARENT: &str = "parent-1";
/// The child's id is its parent's command id.
const CHILD: &str = "parent-1/0/0";
const PENDING: &str = "pending-1";
/// The key of an undecodable message published on `Greeting`'s topic (a dead letter).
const GARBAGE_KEY: &str = "garbage-1";
const GARBAGE: &[u8] = b"not an infinitic envelope";

fn config() -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_millis(5),
        ..WorkerConfig::default()
    }
}

/// A worker with the `Echo` service and every workflow but `Late` (the fixture writer leaves
/// the `Ledger` service and the `Late` workflow out, so their messages stay queued).
fn fixture_worker(store: &SqliteStore, echo: &EchoImpl) -> Worker<SqliteStore> {
    Worker::new(store.clone())
        .service(EchoDispatcher::new(echo.clone()))
        .workflow(GreetingImpl::default)
        .workflow(SleeperImpl::default)
        .workflow(WaiterImpl::default)
        .workflow(ParentImpl::default)
        .workflow(ChildImpl::default)
        .workflow(FragileImpl::default)
        .config(config())
}

// ---------------------------------------------------------------------------------------------
// Fixed values of the message and history fixtures.

fn id(workflow: &str, run: u32, position: u32) -> CommandId {
    CommandId::new(WorkflowId::new(workflow), MethodRun(run), position)
}

fn payload<T: serde::Serialize>(value: &T) -> Vec<u8> {
    encode(value).unwrap()
}

/// One message per variant (and one per outcome of a completion), by file name.
fn messages() -> Vec<(&'static str, Message)> {
    let at = Timestamp::from_millis(1_750_000_000_123);
    let completed = |outcome| Message::CommandCompleted {
        command: id("order-7", 0, 3),
        outcome,
        at,
    };
    vec![
        (
            "start_workflow",
            Message::StartWorkflow {
                workflow_id: WorkflowId::new("order-7"),
                generation: infinitic::Generation::FIRST,
                workflow: "Ordering".into(),
                method: "place".into(),
                input: payload(&("order-7", 3u32, 1999u64)),
                parent: None,
                pending: true,
                reply_to: None,
            },
        ),
        (
            "start_child_workflow",
            Message::StartWorkflow {
                workflow_id: WorkflowId::new("order-7/0/2"),
                generation: infinitic::Generation::FIRST,
                workflow: "Shipping".into(),
                method: "ship".into(),
                input: payload(&("order-7",)),
                parent: Some(ParentStep {
                    workflow: "Ordering".into(),
                    command: id("order-7", 0, 2),
                }),
                pending: false,
                reply_to: None,
            },
        ),
        (
            "execute_task",
            Message::ExecuteTask {
                task: id("order-7", 0, 1),
                workflow: "Ordering".into(),
                service: "Payments".into(),
                method: "charge".into(),
                args: payload(&(42u64, "EUR")),
                attempt: 2,
            },
        ),
        (
            "command_completed",
            completed(StepOutcome::Completed(payload(&"receipt-9"))),
        ),
        (
            "command_failed",
            completed(StepOutcome::Failed {
                error: payload(&"card declined"),
                message: "\"card declined\"".into(),
                attempts: 3,
            }),
        ),
        (
            "command_panicked",
            completed(StepOutcome::Panicked {
                message: "index out of bounds".into(),
                attempts: 1,
            }),
        ),
        (
            "command_timed_out",
            completed(StepOutcome::TimedOut { attempts: 5 }),
        ),
        ("command_canceled", completed(StepOutcome::Canceled)),
        (
            "command_unknown",
            completed(StepOutcome::Unknown {
                reason: "service Payments has no method refund".into(),
            }),
        ),
        (
            "command_invalid",
            completed(StepOutcome::Invalid {
                reason: "cannot decode the step's result".into(),
            }),
        ),
        (
            "workflow_completed",
            Message::WorkflowCompleted {
                workflow_id: WorkflowId::new("order-7"),
                run: MethodRun(1),
                outcome: StepOutcome::Completed(payload(&true)),
            },
        ),
    ]
}

/// History events of every kind, as the store encodes them (one list per transition).
fn history() -> Vec<HistoryEvent> {
    let scheduled = |position, command| {
        HistoryEvent::Scheduled(CommandRecord {
            position,
            command,
            location: None,
        })
    };
    let completed = |position, at, outcome| {
        HistoryEvent::Completed(Completion {
            run: MethodRun(0),
            position,
            at: Timestamp::from_millis(at),
            outcome,
        })
    };
    vec![
        scheduled(
            0,
            Command::CallService {
                service: "Payments".into(),
                method: "charge".into(),
                args: payload(&(42u64, "EUR")),
            },
        ),
        completed(
            0,
            1_750_000_000_200,
            StepOutcome::Completed(payload(&"receipt-9")),
        ),
        scheduled(
            1,
            Command::StartTimer {
                fire_at: Timestamp::from_millis(1_750_000_060_200),
            },
        ),
        completed(1, 1_750_000_060_200, StepOutcome::Completed(payload(&()))),
        scheduled(
            2,
            Command::StartChild {
                workflow: "Shipping".into(),
                method: "ship".into(),
                args: payload(&("order-7",)),
            },
        ),
        completed(
            2,
            1_750_000_061_000,
            StepOutcome::Failed {
                error: payload(&"no carrier"),
                message: "\"no carrier\"".into(),
                attempts: 1,
            },
        ),
    ]
}

/// Every stored state.
fn states() -> Vec<WorkflowState> {
    vec![
        WorkflowState::Pending,
        WorkflowState::Running,
        WorkflowState::Completed(payload(&"done")),
        WorkflowState::Parked("the workflow panicked: boom".into()),
        WorkflowState::Failed("workflow Ordering has no method cancel".into()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Reading the fixtures.

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A copy of the store fixture in a fresh directory: the fixture itself is never opened.
fn store_copy(dir: &TempDir) -> PathBuf {
    for companion in ["store.db-wal", "store.db-shm"] {
        assert!(
            !fixtures().join(companion).exists(),
            "{companion} next to the fixture: the fixture was opened in place; restore it from git"
        );
    }
    let copy = dir.join("store.db");
    std::fs::copy(fixtures().join("store.db"), &copy).unwrap();
    copy
}

#[test]
fn v1_messages_decode_to_their_values() {
    for (name, expected) in messages() {
        let bytes = read(&format!("messages/{name}.bin"));
        assert_eq!(
            bytes[..2],
            [0xB7, 1],
            "{name}: magic and protocol version 1"
        );
        let decoded = decode_message(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected, "{name}");
    }
}

#[test]
fn v1_history_and_states_decode_to_their_values() {
    let events: Vec<HistoryEvent> = decode(&read("history.bin")).unwrap();
    assert_eq!(events, history());
    let decoded: Vec<WorkflowState> = decode(&read("states.bin")).unwrap();
    assert_eq!(decoded, states());
}

fn scheduled(position: u32, command: Command) -> HistoryEvent {
    HistoryEvent::Scheduled(CommandRecord {
        position,
        command,
        location: None,
    })
}

/// A completion at time 0: stored times are compared apart.
fn done(position: u32, outcome: StepOutcome) -> HistoryEvent {
    HistoryEvent::Completed(Completion {
        run: MethodRun(0),
        position,
        at: Timestamp::from_millis(0),
        outcome,
    })
}

fn call(service: &'static str, method: &'static str, args: Vec<u8>) -> Command {
    Command::CallService {
        service: service.into(),
        method: method.into(),
        args,
    }
}

/// The history with completion times replaced by 0, after checking each is within `range`.
fn without_times(
    events: &[HistoryEvent],
    range: std::ops::RangeInclusive<u64>,
) -> Vec<HistoryEvent> {
    events
        .iter()
        .cloned()
        .map(|mut event| {
            if let HistoryEvent::Completed(completion) = &mut event {
                assert!(
                    range.contains(&completion.at.as_millis()),
                    "completion time {:?} not in {range:?}",
                    completion.at
                );
                completion.at = Timestamp::from_millis(0);
            }
            event
        })
        .collect()
}

/// The v1 store fixture was written on 2026-11-30 (UTC): its times are from that day on.
const WRITTEN_AFTER: u64 = 1_795_996_800_000;

fn check_header(
    stored: &StoredWorkflow,
    workflow: &str,
    input: Vec<u8>,
    parent: Option<ParentStep>,
) {
    let now = Timestamp::wall_clock().as_millis();
    assert!(
        (WRITTEN_AFTER..=now).contains(&stored.header.started_at.as_millis()),
        "{}: started at {:?}",
        stored.id,
        stored.header.started_at
    );
    assert_eq!(
        stored.header,
        WorkflowHeader {
            generation: infinitic::Generation::FIRST,
            workflow: workflow.into(),
            method: "run".into(),
            input,
            started_at: stored.header.started_at,
            parent,
        },
        "{}",
        stored.id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_store_opens_and_every_instance_loads_as_written() {
    let dir = TempDir::new("compat-load");
    let store = SqliteStore::open(store_copy(&dir), OpenMode::MustExist).unwrap();
    let load = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .load(&WorkflowId::new(id), true)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{id} is in the fixture"))
        }
    };
    let now = Timestamp::wall_clock().as_millis();
    let times = WRITTEN_AFTER..=now;

    let completed = load(COMPLETED).await;
    check_header(&completed, "Greeting", payload(&("Ada",)), None);
    assert_eq!(
        completed.state,
        WorkflowState::Completed(payload(&"Hello, Ada! (whisper: unknown)"))
    );
    let events = without_times(&completed.history, times.clone());
    let HistoryEvent::Completed(Completion {
        outcome: StepOutcome::Unknown { reason },
        ..
    }) = &events[3]
    else {
        panic!("the unknown method's outcome: {events:?}")
    };
    assert!(reason.contains("whisper"), "{reason}");
    assert_eq!(
        events,
        vec![
            scheduled(0, call("Echo", "echo", payload(&("Hello, Ada!",)))),
            done(0, StepOutcome::Completed(payload(&"Hello, Ada!"))),
            scheduled(1, call("Echo", "whisper", payload(&("Ada",)))),
            done(
                1,
                StepOutcome::Unknown {
                    reason: reason.clone()
                }
            ),
        ]
    );

    let parked = load(PARKED).await;
    check_header(&parked, "Fragile", payload(&("on purpose",)), None);
    let WorkflowState::Parked(reason) = &parked.state else {
        panic!("{:?}", parked.state)
    };
    assert!(reason.contains("fragile: on purpose"), "{reason}");
    assert_eq!(parked.history, vec![]);

    let timer = load(TIMER).await;
    check_header(&timer, "Sleeper", payload(&("tick",)), None);
    assert_eq!(timer.state, WorkflowState::Running);
    let fire_at = timer.header.started_at + SLEEP;
    assert_eq!(
        timer.history,
        vec![scheduled(0, Command::StartTimer { fire_at })]
    );

    let waiting = load(WAITING).await;
    check_header(&waiting, "Waiter", payload(&("rent",)), None);
    assert_eq!(waiting.state, WorkflowState::Running);
    assert_eq!(
        waiting.history,
        vec![scheduled(0, call("Ledger", "record", payload(&("rent",))))]
    );

    let parent = load(PARENT).await;
    check_header(&parent, "Parent", payload(&(7u64,)), None);
    assert_eq!(parent.state, WorkflowState::Running);
    assert_eq!(
        parent.history,
        vec![scheduled(
            0,
            Command::StartChild {
                workflow: "Child".into(),
                method: "run".into(),
                args: payload(&(7u64,)),
            }
        )]
    );

    let child = load(CHILD).await;
    let waiting_parent = ParentStep {
        workflow: "Parent".into(),
        command: id(PARENT, 0, 0),
    };
    check_header(&child, "Child", payload(&(7u64,)), Some(waiting_parent));
    assert_eq!(child.state, WorkflowState::Running);
    assert_eq!(
        child.history,
        vec![scheduled(
            0,
            call("Ledger", "record", payload(&("child 7",)))
        )]
    );

    let pending = load(PENDING).await;
    check_header(&pending, "Late", payload(&("Grace",)), None);
    assert_eq!(pending.state, WorkflowState::Pending);
    assert_eq!(pending.history, vec![]);

    assert_eq!(
        store.load(&WorkflowId::new("absent"), true).await.unwrap(),
        None
    );

    let mut dead = store.dead_letters(10).await.unwrap();
    dead.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(
        (dead[0].topic.as_str(), dead[0].key.as_str()),
        ("service:Echo", "completed-1/0/1")
    );
    assert!(dead[0].reason.contains("whisper"), "{}", dead[0].reason);
    assert_eq!(
        decode_message(&dead[0].payload).unwrap(),
        Message::ExecuteTask {
            task: id(COMPLETED, 0, 1),
            workflow: "Greeting".into(),
            service: "Echo".into(),
            method: "whisper".into(),
            args: payload(&("Ada",)),
            attempt: 1,
        }
    );
    assert_eq!(
        (dead[1].topic.as_str(), dead[1].key.as_str()),
        ("workflow:Greeting", GARBAGE_KEY)
    );
    assert_eq!(dead[1].payload, GARBAGE);
    assert!(dead[1].reason.contains("undecodable"), "{}", dead[1].reason);
}

/// The messages still queued in the fixture, read straight from the file as version 1 laid it
/// out (table `queue`), each decoded by the current build.
#[test]
fn v1_queued_messages_decode_to_what_was_in_flight() {
    let dir = TempDir::new("compat-queue");
    let copy = store_copy(&dir);
    let db = rusqlite::Connection::open(&copy).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1, "schema version of the v1 fixture");
    let mut select = db
        .prepare("SELECT topic, key, payload FROM queue ORDER BY topic, key")
        .unwrap();
    let rows: Vec<(String, String, Vec<u8>)> = select
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let decoded: Vec<(&str, &str, Message)> = rows
        .iter()
        .map(|(topic, key, bytes)| {
            let message = decode_message(bytes).unwrap_or_else(|e| panic!("{topic} {key}: {e}"));
            (topic.as_str(), key.as_str(), message)
        })
        .collect();
    let Some((_, _, Message::CommandCompleted { at: fire_at, .. })) = decoded
        .iter()
        .find(|(topic, ..)| *topic == "workflow:Sleeper")
    else {
        panic!("the timer is queued: {decoded:?}")
    };
    let task = |workflow: &str, command: CommandId, args| Message::ExecuteTask {
        task: command,
        workflow: workflow.into(),
        service: "Ledger".into(),
        method: "record".into(),
        args,
        attempt: 1,
    };
    assert_eq!(
        decoded,
        vec![
            (
                "service:Ledger",
                CHILD_TASK,
                task("Child", id(CHILD, 0, 0), payload(&("child 7",)))
            ),
            (
                "service:Ledger",
                "waiting-1/0/0",
                task("Waiter", id(WAITING, 0, 0), payload(&("rent",)))
            ),
            (
                "workflow:Late",
                PENDING,
                Message::StartWorkflow {
                    workflow_id: WorkflowId::new(PENDING),
                    generation: infinitic::Generation::FIRST,
                    workflow: "Late".into(),
                    method: "run".into(),
                    input: payload(&("Grace",)),
                    parent: None,
                    pending: true,
                    reply_to: None,
                }
            ),
            (
                "workflow:Sleeper",
                TIMER,
                Message::CommandCompleted {
                    command: id(TIMER, 0, 0),
                    outcome: StepOutcome::Completed(payload(&())),
                    at: *fire_at,
                }
            ),
        ]
    );
}

/// The task id of the child's `Ledger` call: its own id, a run and a position.
const CHILD_TASK: &str = "parent-1/0/0/0/0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_store_runs_every_unfinished_instance_to_its_end_with_the_same_task_ids() {
    let dir = TempDir::new("compat-run");
    let store = SqliteStore::open(store_copy(&dir), OpenMode::MustExist).unwrap();
    let (echo, ledger) = (EchoImpl::default(), LedgerImpl::default());
    let worker = fixture_worker(&store, &echo)
        .service(LedgerDispatcher::new(ledger.clone()))
        .workflow(LateImpl::default)
        .start();
    let client = Client::new(store.clone());
    let before = store.dead_letters(10).await.unwrap();

    // The timer fired long ago, unless the fixture was written a moment ago.
    let within = Duration::from_secs(30) + SLEEP;
    let waiting: u64 = result_of(&client, WAITING, within).await;
    let parent: u64 = result_of(&client, PARENT, within).await;
    let child: u64 = result_of(&client, CHILD, within).await;
    let pending: String = result_of(&client, PENDING, within).await;
    let timer: String = result_of(&client, TIMER, within).await;
    assert_eq!(waiting, 1004, "receipt of \"rent\"");
    assert_eq!(child, 1014, "receipt of \"child 7\", plus 7");
    assert_eq!(parent, 1015, "the child's result, plus 1");
    assert_eq!(pending, "Hello, Grace!");
    assert_eq!(timer, "slept, then tick");

    // Idempotency keys do not change across an upgrade: `workflow-id/run/position`.
    assert_eq!(ledger.0.sorted(), vec![CHILD_TASK, "waiting-1/0/0"]);
    assert_eq!(echo.0.sorted(), vec!["pending-1/0/0", "timer-1/0/1"]);

    // The timer completed at its time, and the step after it was recorded.
    let stored = store
        .load(&WorkflowId::new(TIMER), true)
        .await
        .unwrap()
        .unwrap();
    let fire_at = stored.header.started_at + SLEEP;
    let HistoryEvent::Completed(fired) = &stored.history[1] else {
        panic!("{:?}", stored.history)
    };
    assert_eq!(fired.at, fire_at);
    let now = Timestamp::wall_clock().as_millis();
    assert_eq!(
        without_times(&stored.history, fire_at.as_millis()..=now),
        vec![
            scheduled(0, Command::StartTimer { fire_at }),
            done(0, StepOutcome::Completed(payload(&()))),
            scheduled(1, call("Echo", "echo", payload(&("tick",)))),
            done(1, StepOutcome::Completed(payload(&"tick"))),
        ]
    );

    // What had ended stays as it was, and nothing new was dead-lettered.
    let completed = client.handle::<String>(COMPLETED).result().await.unwrap();
    assert_eq!(completed, "Hello, Ada! (whisper: unknown)");
    assert!(matches!(
        client.status(&WorkflowId::new(PARKED)).await.unwrap(),
        Some(WorkflowState::Parked(_))
    ));
    assert_eq!(store.dead_letters(10).await.unwrap(), before);
    worker.shutdown().await;
}

async fn result_of<R: serde::de::DeserializeOwned>(
    client: &Client<SqliteStore>,
    id: &str,
    within: Duration,
) -> R {
    tokio::time::timeout(within, client.handle::<R>(id).result())
        .await
        .unwrap_or_else(|_| panic!("{id} does not finish"))
        .unwrap_or_else(|e| panic!("{id}: {e}"))
}

/// Writes a fixture folder with this build's format: messages, history, states and a store
/// file. Run by hand, once per new format version, into a new folder (it refuses to overwrite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes fixtures: run by hand, once, for a new format version"]
async fn write_fixtures() {
    let target = std::env::var("INFINITIC_FIXTURES")
        .map(|dir| Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap_or_else(|_| fixtures());
    assert!(
        !target.join("store.db").exists(),
        "{} holds fixtures already: never regenerate a version's fixtures, write a new folder",
        target.display()
    );
    std::fs::create_dir_all(target.join("messages")).unwrap();
    for (name, message) in messages() {
        let path = target.join(format!("messages/{name}.bin"));
        std::fs::write(path, encode_message(&message)).unwrap();
    }
    std::fs::write(target.join("history.bin"), payload(&history())).unwrap();
    std::fs::write(target.join("states.bin"), payload(&states())).unwrap();

    let dir = TempDir::new("compat-write");
    let path = dir.join("store.db");
    let store = SqliteStore::open(&path, OpenMode::CreateIfMissing).unwrap();
    let echo = EchoImpl::default();
    // No `Ledger` service (its tasks stay queued) and no `Late` workflow (it stays pending).
    let worker = fixture_worker(&store, &echo).start();
    let client = Client::new(store.clone());
    let garbage = Outgoing::new(
        "workflow:Greeting",
        GARBAGE_KEY,
        GARBAGE.to_vec(),
        Timestamp::wall_clock(),
    );
    store.publish(vec![garbage]).await.unwrap();
    client
        .dispatch_with_id(COMPLETED, GreetingStub.run("Ada".into()))
        .await
        .unwrap();
    client
        .dispatch_with_id(PARKED, FragileStub.run("on purpose".into()))
        .await
        .unwrap();
    client
        .dispatch_with_id(TIMER, SleeperStub.run("tick".into()))
        .await
        .unwrap();
    client
        .dispatch_with_id(WAITING, WaiterStub.run("rent".into()))
        .await
        .unwrap();
    client
        .dispatch_with_id(PARENT, ParentStub.run(7))
        .await
        .unwrap();
    client
        .dispatch_with_id(PENDING, LateStub.run("Grace".into()))
        .await
        .unwrap();

    // Until every instance is where the fixture wants it.
    let ready = || async {
        let mut ready = store.dead_letters(10).await.unwrap().len() == 2;
        for (id, finished) in [
            (COMPLETED, true),
            (PARKED, true),
            (TIMER, false),
            (WAITING, false),
            (PARENT, false),
            (CHILD, false),
        ] {
            let stored = store.load(&WorkflowId::new(id), true).await.unwrap();
            ready &= stored.is_some_and(|w| {
                if finished {
                    w.state.is_final()
                } else {
                    w.state == WorkflowState::Running && w.history.len() == 1
                }
            });
        }
        ready
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while !ready().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every instance reaches its stage");
    worker.shutdown().await;

    let timer = store
        .load(&WorkflowId::new(TIMER), false)
        .await
        .unwrap()
        .unwrap();
    assert!(
        Timestamp::wall_clock() < timer.header.started_at + SLEEP,
        "written before the timer fires"
    );
    assert_eq!(timer.state, WorkflowState::Running);
    assert_eq!(echo.0.sorted(), vec!["completed-1/0/0"]);

    // The last handle gone, the store closes its connection: SQLite checkpoints its log into
    // the file and removes it.
    drop(client);
    drop(store);
    let wal = dir.join("store.db-wal");
    tokio::time::timeout(Duration::from_secs(10), async {
        while wal.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the store closes its log");
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        let busy: i64 = db
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 0);
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
    assert!(!wal.exists() && !dir.join("store.db-shm").exists());
    std::fs::copy(&path, target.join("store.db")).unwrap();
}
