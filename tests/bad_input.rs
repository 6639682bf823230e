//! Bad input never crashes a worker and is never silently dropped: it goes to the dead-letter
//! table with a reason, the workflow waiting on it gets a typed failure, and the worker keeps
//! running. A bad database file is a clear error at start-up.

use infinitic::message::{encode_message, Message};
use infinitic::prelude::*;

#[path = "support/dead_letters.rs"]
mod dead_letters;
use dead_letters::{raw, show};
use infinitic::store::sqlite::{Durability, OpenMode};
use infinitic::store::StoreError;
use infinitic::{
    Client, ClientError, CommandId, MethodRun, SqliteStore, Timestamp, Transport, Worker,
    WorkerConfig, WorkflowCall, WorkflowId, WorkflowState,
};
use std::path::PathBuf;
use std::time::Duration;

/// What the worker serves.
#[service]
pub trait Echo {
    async fn echo(&self, n: u64) -> u64;
}

/// What a workflow compiled against another version of the contract calls: same service
/// name, an extra method and another argument type.
#[service(name = "Echo")]
pub trait EchoV2 {
    async fn echo(&self, text: String) -> String;
    async fn shout(&self) -> String;
}

/// A service no worker serves.
#[service]
pub trait Ghost {
    async fn call(&self) -> u64;
}

struct EchoImpl;
impl Echo for EchoImpl {
    async fn echo(&self, n: u64) -> u64 {
        n
    }
}

#[workflow]
pub trait Probe {
    async fn run(&self, case: u8) -> String;
}

#[derive(Default)]
pub struct ProbeImpl {
    echo: EchoStub,
    v2: EchoV2Stub,
    ghost: GhostStub,
}

#[workflow]
impl Probe for ProbeImpl {
    async fn run(&self, case: u8) -> String {
        match case {
            0 => show(self.v2.shout().await),
            1 => show(self.v2.echo("text".into()).await),
            2 => show(self.ghost.call().await),
            _ => show(self.echo.echo(u64::from(case)).await),
        }
    }
}

struct Setup {
    store: SqliteStore,
    client: Client<SqliteStore>,
    _worker: infinitic::RunningWorker,
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infinitic-bad-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("store.db")
}

fn setup() -> Setup {
    let store = SqliteStore::open_with(":memory:", OpenMode::CreateIfMissing, Durability::InMemory)
        .unwrap();
    let worker = Worker::new(store.clone())
        .service(EchoDispatcher::new(EchoImpl))
        .workflow(ProbeImpl::default)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    Setup {
        client: Client::new(store.clone()),
        store,
        _worker: worker,
    }
}

async fn probe(s: &Setup, case: u8) -> String {
    let handle = s
        .client
        .dispatch_with_id(format!("probe-{case}"), ProbeStub.run(case))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.result())
        .await
        .expect("the workflow finishes")
        .expect("the workflow completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dead_lettered_and_the_worker_keeps_running() {
    let s = setup();
    s.store
        .publish(vec![
            raw("workflow:Probe", "x", b"not an envelope".to_vec()),
            raw("service:Echo", "y", vec![0xB7, 1, 0xc1]),
        ])
        .await
        .unwrap();
    let reasons = dead_letters::wait_for(&s.store, 2).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("undecodable workflow message: not an infinitic message")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("undecodable task message: malformed")),
        "{reasons:?}"
    );
    assert_eq!(
        probe(&s, 7).await,
        "ok 7",
        "the worker still runs workflows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_method_fails_the_waiting_step_with_unknown() {
    let s = setup();
    let result = probe(&s, 0).await;
    assert!(result.starts_with("Unknown"), "{result}");
    assert!(result.contains("`Echo` has no method `shout`"), "{result}");
    let reasons = dead_letters::reasons(&s.store).await;
    assert_eq!(reasons, vec!["`Echo` has no method `shout`".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_argument_types_fail_the_waiting_step_with_invalid() {
    let s = setup();
    let result = probe(&s, 1).await;
    assert!(result.starts_with("Invalid"), "{result}");
    let reasons = dead_letters::reasons(&s.store).await;
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].starts_with("arguments of `Echo::echo` cannot be decoded"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_for_an_unknown_service_fails_the_waiting_step_with_unknown() {
    let s = setup();
    let handle = s
        .client
        .dispatch_with_id("probe-2", ProbeStub.run(2))
        .await
        .unwrap();
    // Nobody serves Ghost: its task waits (services may be down for hours), nothing is lost.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handle.status().await.unwrap(), WorkflowState::Running);
    // The same task delivered to a worker that does not know the service.
    let task = CommandId::new(WorkflowId::new("probe-2"), MethodRun(0), 0);
    let message = encode_message(&Message::ExecuteTask {
        task: task.clone(),
        workflow: "Probe".into(),
        service: "Ghost".into(),
        method: "call".into(),
        args: infinitic::encode(&()).unwrap(),
        attempt: 1,
    });
    s.store
        .publish(vec![raw("service:Echo", &task.to_string(), message)])
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), handle.result())
        .await
        .unwrap()
        .unwrap();
    assert!(result.starts_with("Unknown"), "{result}");
    assert!(result.contains("no service named `Ghost`"), "{result}");
    let reasons = dead_letters::reasons(&s.store).await;
    assert!(
        reasons[0].contains("no service named `Ghost`"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_workflow_method_fails_the_start_with_a_reason() {
    let s = setup();
    let call: WorkflowCall<String> = WorkflowCall::new("Probe", "nope", ());
    let handle = s.client.dispatch_with_id("p-nope", call).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), handle.result())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Failed { reason, .. } if reason == "`Probe` has no method `nope`"),
        "{error}"
    );
    assert_eq!(
        dead_letters::reasons(&s.store).await,
        vec!["`Probe` has no method `nope`".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_workflow_argument_types_fail_the_start_with_a_reason() {
    let s = setup();
    let call: WorkflowCall<String> = WorkflowCall::new("Probe", "run", ("not a number",));
    let handle = s.client.dispatch_with_id("p-bad-args", call).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), handle.result())
        .await
        .unwrap()
        .unwrap_err();
    let ClientError::Failed { reason, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        reason.starts_with("arguments of `Probe::run` cannot be decoded"),
        "{reason}"
    );
    assert_eq!(dead_letters::reasons(&s.store).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_for_an_unknown_workflow_is_dead_lettered_and_fails() {
    let s = setup();
    let message = encode_message(&Message::StartWorkflow {
        workflow_id: WorkflowId::new("ghost-1"),
        generation: infinitic::Generation::FIRST,
        workflow: "GhostWorkflow".into(),
        method: "run".into(),
        input: infinitic::encode(&()).unwrap(),
        parent: None,
        pending: false,
        reply_to: None,
    });
    s.store
        .publish(vec![raw("workflow:Probe", "ghost-1", message)])
        .await
        .unwrap();
    let reasons = dead_letters::wait_for(&s.store, 1).await;
    assert_eq!(
        reasons,
        vec!["no workflow named `GhostWorkflow` is registered on this worker".to_string()]
    );
    let error = s.client.handle::<()>("ghost-1").result().await.unwrap_err();
    assert!(matches!(error, ClientError::Failed { .. }), "{error}");
    // A start on a topic no worker serves waits for one: pending, not lost.
    let call: WorkflowCall<()> = WorkflowCall::new("NotDeployedYet", "run", ());
    let handle = s.client.dispatch_with_id("later-1", call).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handle.status().await.unwrap(), WorkflowState::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_an_unknown_instance_is_dead_lettered() {
    let s = setup();
    let message = encode_message(&Message::CommandCompleted {
        command: CommandId::new(WorkflowId::new("nobody"), MethodRun(0), 0),
        outcome: infinitic::StepOutcome::Completed(vec![]),
        at: Timestamp::from_millis(0),
    });
    s.store
        .publish(vec![raw("workflow:Probe", "nobody", message)])
        .await
        .unwrap();
    let reasons = dead_letters::wait_for(&s.store, 1).await;
    assert_eq!(
        reasons,
        vec!["event for unknown workflow instance nobody".to_string()]
    );
    assert_eq!(probe(&s, 9).await, "ok 9");
}

#[test]
fn a_missing_database_is_a_clear_error_for_clients() {
    let path = temp_path("missing");
    let error = SqliteStore::open(&path, OpenMode::MustExist).unwrap_err();
    assert!(matches!(error, StoreError::Missing { .. }));
    assert!(error.to_string().starts_with("no database at "), "{error}");
    assert!(
        !path.exists(),
        "opening for a client must not create the file"
    );
}

#[test]
fn a_corrupt_database_is_a_clear_error_at_start_up() {
    let path = temp_path("corrupt");
    std::fs::write(&path, vec![0x42; 8192]).unwrap();
    let error = SqliteStore::open(&path, OpenMode::CreateIfMissing).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(
        error.to_string().contains("is not an infinitic database"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![0x42; 8192],
        "the file is left as it was"
    );
}

#[test]
fn another_applications_database_is_refused_and_left_alone() {
    let path = temp_path("foreign");
    let foreign = rusqlite::Connection::open(&path).unwrap();
    foreign
        .execute_batch(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (1);",
        )
        .unwrap();
    drop(foreign);
    let error = SqliteStore::open(&path, OpenMode::CreateIfMissing).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("an SQLite database of another application"),
        "{error}"
    );
    let foreign = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = foreign
        .query_row("SELECT count(*) FROM invoices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn a_database_from_a_newer_schema_is_refused() {
    let path = temp_path("newer");
    let newer = rusqlite::Connection::open(&path).unwrap();
    newer.execute_batch("PRAGMA user_version = 99;").unwrap();
    drop(newer);
    let error = SqliteStore::open(&path, OpenMode::MustExist).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SchemaVersion {
                found: 99,
                expected: 3,
                ..
            }
        ),
        "{error}"
    );
}
