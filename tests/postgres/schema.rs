//! The schema: created by the store, read back from a dump of every earlier version, refused
//! when it is another application's or a newer build's.
//!
//! `tests/fixtures/postgres/v1.sql` is a `pg_dump` of a database written by schema version 1
//! (instances in every state, an outbox entry, a consumed message id), made once by the
//! ignored `write_fixture` below:
//! `INFINITIC_PG_FIXTURE=tests/fixtures/postgres/v2.sql cargo test --features postgres
//! --test postgres -- --ignored write_fixture`. Never regenerate an existing version's dump.

use super::pg::{self, Server};
use infinitic::message::{MessageId, ParentStep};
use infinitic::store::postgres::{PostgresOptions, PostgresStore, SCHEMA_VERSION};
use infinitic::store::StoreError;
use infinitic::store::{CommitOutcome, Consumed, DeliveryId, Outgoing, Transition, WorkflowHeader};
use infinitic::{
    Command, CommandId, CommandRecord, Completion, Generation, HistoryEvent, MethodRun, StateStore,
    StepOutcome, Timestamp, WorkflowId, WorkflowState,
};
use std::path::PathBuf;
use std::time::Duration;

fn fixture(version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/postgres/v{version}.sql"))
}

/// The instances of the fixture: (id, header, state, history by transition).
fn instances() -> Vec<(
    WorkflowId,
    WorkflowHeader,
    WorkflowState,
    Vec<Vec<HistoryEvent>>,
)> {
    let header = |workflow: &str, generation, parent| WorkflowHeader {
        generation: Generation(generation),
        workflow: workflow.into(),
        method: "run".into(),
        input: vec![0x91, 0x07],
        started_at: Timestamp::from_millis(1_750_000_000_000),
        parent,
    };
    let scheduled = |position, command| {
        HistoryEvent::Scheduled(CommandRecord {
            position,
            command,
            location: None,
        })
    };
    let completed = |position, outcome| {
        HistoryEvent::Completed(Completion {
            run: MethodRun(0),
            position,
            at: Timestamp::from_millis(1_750_000_000_200),
            outcome,
        })
    };
    let call = Command::CallService {
        service: "Payments".into(),
        method: "charge".into(),
        args: vec![0x92, 0x2a, 0xa3, b'E', b'U', b'R'],
    };
    let timer = Command::StartTimer {
        fire_at: Timestamp::from_millis(1_750_000_060_200),
    };
    let child = Command::StartChild {
        workflow: "Shipping".into(),
        method: "ship".into(),
        args: vec![0x91, 0x01],
    };
    let parent = ParentStep {
        workflow: "Order".into(),
        command: CommandId::new(WorkflowId::new("order-1"), MethodRun(0), 2),
    };
    vec![
        (
            WorkflowId::new("pending-1"),
            header("Order", 0, None),
            WorkflowState::Pending,
            vec![],
        ),
        (
            WorkflowId::new("order-1"),
            header("Order", 2, None),
            WorkflowState::Running,
            vec![
                vec![scheduled(0, call)],
                vec![
                    completed(0, StepOutcome::Completed(vec![0xa1, b'r'])),
                    scheduled(1, timer),
                ],
                vec![
                    completed(1, StepOutcome::Completed(vec![0xc0])),
                    scheduled(2, child),
                ],
            ],
        ),
        (
            WorkflowId::new("order-1/0/2"),
            header("Shipping", 0, Some(parent)),
            WorkflowState::Completed(vec![0xc3]),
            vec![vec![]],
        ),
        (
            WorkflowId::new("parked-1"),
            header("Order", 0, None),
            WorkflowState::Parked("the workflow panicked: boom".into()),
            vec![vec![completed(
                0,
                StepOutcome::Failed {
                    error: vec![0xa2, b'n', b'o'],
                    message: "\"no\"".into(),
                    attempts: 3,
                },
            )]],
        ),
        (
            WorkflowId::new("failed-1"),
            header("Order", 0, None),
            WorkflowState::Failed("workflow Order has no method cancel".into()),
            vec![vec![]],
        ),
    ]
}

const CONSUMED: &str = "done:order-1/0/1";

fn outbox_message() -> Outgoing {
    Outgoing::new(
        "service:Shipping",
        "order-1/0/2",
        vec![1, 2, 3],
        Timestamp::from_millis(1_750_000_061_000),
    )
}

/// Writes a dump of the current schema to `INFINITIC_PG_FIXTURE` (see the module docs).
#[tokio::test]
#[ignore]
async fn write_fixture() {
    let Some(server) = pg::server() else { return };
    let path = std::env::var("INFINITIC_PG_FIXTURE").expect("INFINITIC_PG_FIXTURE=path");
    let url = server.fresh_database("fixture");
    let store = PostgresStore::connect(&url, PostgresOptions::default())
        .await
        .unwrap();
    for (id, header, state, history) in instances() {
        let transitions = history.len().max(1);
        for step in 0..transitions {
            let version = step as u64;
            let last = step + 1 == transitions;
            let transition = Transition {
                workflow_id: id.clone(),
                expected_version: version,
                header: (version == 0).then(|| header.clone()),
                state: if last {
                    state.clone()
                } else {
                    WorkflowState::Running
                },
                append: history.get(step).cloned().unwrap_or_default(),
                outbox: match (id.as_str(), last) {
                    ("order-1", true) => vec![outbox_message()],
                    _ => Vec::new(),
                },
                consumed: (id.as_str() == "order-1" && last).then(|| Consumed {
                    message: MessageId::new(CONSUMED),
                    delivery: DeliveryId::new(1),
                }),
                dead_letter: None,
                report_to: None,
            };
            let outcome = store.commit(vec![transition]).await.unwrap();
            assert_eq!(outcome, vec![CommitOutcome::Committed]);
        }
    }
    let dump = std::process::Command::new("pg_dump")
        .args([
            "--schema=infinitic",
            "--no-owner",
            "--no-privileges",
            "-d",
            &url,
            "-f",
            &path,
        ])
        .status()
        .unwrap();
    assert!(dump.success());
}

/// A fresh database with the dump of schema `version` loaded.
pub(super) fn database_from_fixture(server: &Server, version: u32) -> String {
    let url = server.fresh_database(&format!("v{version}"));
    let path = fixture(version);
    let loaded = std::process::Command::new("psql")
        .args([&url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    url
}

#[tokio::test]
async fn a_v1_database_opens_and_every_instance_loads_as_written() {
    let Some(server) = pg::server() else { return };
    let url = database_from_fixture(&server, 1);
    let store = PostgresStore::connect(&url, PostgresOptions::default())
        .await
        .unwrap();
    for (id, header, state, history) in instances() {
        let stored = store.load(&id, true).await.unwrap().expect("stored");
        assert_eq!(stored.header, header, "{id}");
        assert_eq!(stored.state, state, "{id}");
        assert_eq!(stored.version, history.len().max(1) as u64, "{id}");
        assert_eq!(stored.history, history.concat(), "{id}");
    }
    let outbox = store.outbox(10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].message, outbox_message());
    // The consumed id is still recognised; a new step on a loaded instance applies.
    let order = WorkflowId::new("order-1");
    let again = |message: &str| Transition {
        workflow_id: order.clone(),
        expected_version: 3,
        header: None,
        state: WorkflowState::Running,
        append: Vec::new(),
        outbox: Vec::new(),
        consumed: Some(Consumed {
            message: MessageId::new(message),
            delivery: DeliveryId::new(9),
        }),
        dead_letter: None,
        report_to: None,
    };
    let outcome = store.commit(vec![again(CONSUMED)]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Conflict]);
    let outcome = store.commit(vec![again("done:order-1/0/2")]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    let version = server_psql(&url, "SELECT version FROM infinitic.schema_version");
    assert_eq!(version, SCHEMA_VERSION.to_string());
}

fn server_psql(url: &str, sql: &str) -> String {
    Server::try_psql(url, sql).unwrap()
}

#[tokio::test]
async fn a_new_schema_is_created_once_at_the_current_version() {
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("created");
    let (first, second) = tokio::join!(server.store(&schema), server.store(&schema));
    drop((first, second));
    let tables = server.psql(&format!(
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = '{schema}'"
    ));
    assert_eq!(
        tables,
        "consumed,history,outbox,schema_version,timers,workflows"
    );
    let version = server.psql(&format!("SELECT version FROM {schema}.schema_version"));
    assert_eq!(version, SCHEMA_VERSION.to_string());
}

async fn refused(server: &Server, schema: &str) -> StoreError {
    match PostgresStore::connect(&server.url, pg::options(schema)).await {
        Ok(_) => panic!("schema {schema} was accepted"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_schema_of_another_application_is_refused() {
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("foreign");
    server.psql(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.orders (id int)"
    ));
    let error = refused(&server, &schema).await;
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("another application (orders)"),
        "{message}"
    );
    assert!(message.contains(&schema), "{message}");
    // Nothing was added to it.
    let tables = server.psql(&format!(
        "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}'"
    ));
    assert_eq!(tables, "1");
}

#[tokio::test]
async fn a_version_row_we_do_not_know_is_refused() {
    let Some(server) = pg::server() else { return };
    for (name, sql) in [
        ("zero", "UPDATE {s}.schema_version SET version = 0"),
        ("two_rows", "INSERT INTO {s}.schema_version VALUES (1)"),
        ("no_row", "DELETE FROM {s}.schema_version"),
    ] {
        let schema = pg::unique(name);
        drop(server.store(&schema).await);
        server.psql(&sql.replace("{s}", &schema));
        let error = refused(&server, &schema).await;
        assert!(
            matches!(error, StoreError::Corrupt { .. }),
            "{name}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_schema_written_by_a_newer_build_is_refused() {
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("newer");
    drop(server.store(&schema).await);
    let newer = SCHEMA_VERSION + 1;
    server.psql(&format!(
        "UPDATE {schema}.schema_version SET version = {newer}"
    ));
    let error = refused(&server, &schema).await;
    match &error {
        StoreError::SchemaVersion {
            found, expected, ..
        } => {
            assert_eq!(
                (*found, *expected),
                (i64::from(newer), i64::from(SCHEMA_VERSION))
            );
        }
        other => panic!("expected a schema version error, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&format!("schema version {newer}")),
        "{message}"
    );
}

#[tokio::test]
async fn a_bad_schema_name_is_refused() {
    let Some(server) = pg::server() else { return };
    let error = refused(&server, "Robert'); DROP TABLE students;--").await;
    assert!(error.to_string().contains("invalid schema name"), "{error}");
}

#[tokio::test]
async fn consumed_ids_are_forgotten_after_their_retention() {
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("retention");
    let options = PostgresOptions {
        consumed_retention: Duration::ZERO,
        ..pg::options(&schema)
    };
    let store = PostgresStore::connect(&server.url, options).await.unwrap();
    let id = WorkflowId::new("wf-1");
    let step = |version: u64, message: &str| Transition {
        workflow_id: id.clone(),
        expected_version: version,
        header: (version == 0).then(|| instances()[0].1.clone()),
        state: WorkflowState::Running,
        append: Vec::new(),
        outbox: Vec::new(),
        consumed: Some(Consumed {
            message: MessageId::new(message),
            delivery: DeliveryId::new(version),
        }),
        dead_letter: None,
        report_to: None,
    };
    // The first batch's prune runs right after it: with no retention, the id is forgotten.
    let outcome = store.commit(vec![step(0, "m-1")]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    let outcome = store.commit(vec![step(1, "m-1")]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    let kept = server.psql(&format!("SELECT count(*) FROM {schema}.consumed"));
    assert_eq!(
        kept, "1",
        "recorded again, pruned again only a minute later"
    );
    // With the default retention nothing is forgotten.
    let store = server.store(&schema).await;
    let outcome = store.commit(vec![step(2, "m-2")]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    let outcome = store.commit(vec![step(3, "m-2")]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Conflict]);
}
