//! The embedded store under faults of its environment: a full disk, a lock held by another
//! process, a log that cannot be synced, unusual paths, rows it did not write. Each answer
//! tells the truth: what is acknowledged is there, what failed with a transient error left
//! nothing visible, and what may have applied says so.
//!
//! The full-disk tests mount a small tmpfs, so they need root; they are skipped with a message
//! otherwise.

use infinitic::prelude::*;
use infinitic::store::sqlite::{OpenMode, StoreOptions};
use infinitic::store::{CommitOutcome, Outgoing, StoreError, Transition, WorkflowHeader};
use infinitic::{
    Client, ClientError, SqliteStore, StateStore, Timestamp, Transport, WorkflowId, WorkflowState,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[path = "support/dirs.rs"]
mod dirs;
use dirs::{fill, TempDir};

fn header(input: Vec<u8>) -> WorkflowHeader {
    WorkflowHeader {
        generation: infinitic::Generation::FIRST,
        workflow: "Test".into(),
        method: "run".into(),
        input,
        started_at: Timestamp::from_millis(1_000),
        parent: None,
    }
}

/// What a client's start is: a pending instance and its start message, in one transition.
fn start(id: &WorkflowId, input: Vec<u8>) -> Transition {
    Transition {
        workflow_id: id.clone(),
        expected_version: 0,
        header: Some(header(input.clone())),
        state: WorkflowState::Pending,
        append: Vec::new(),
        outbox: vec![Outgoing::new(
            "workflow:Test",
            id.to_string(),
            input,
            Timestamp::from_millis(0),
        )],
        consumed: None,
        dead_letter: None,
        report_to: None,
    }
}

/// Counts, read with a connection of its own: instance rows and queued messages of `id`.
fn visible(db: &Path, id: &WorkflowId) -> (i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let count = |sql: &str| -> i64 { c.query_row(sql, [id.as_str()], |r| r.get(0)).unwrap() };
    (
        count("SELECT count(*) FROM workflows WHERE id = ?1"),
        count("SELECT count(*) FROM queue WHERE key = ?1"),
    )
}

/// Item 1 of the store-faults issue: SQLite may roll a transaction back by itself when the
/// disk is full in the middle of a statement. Then no further statement of the batch may run
/// (each would commit on its own). Every start answered `Committed` is stored with its
/// message; every one answered with an error is transient and left nothing visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_hits_a_full_disk_commits_whole_or_leaves_nothing() {
    let Some(dir) = TempDir::small_filesystem("full-batch", "3m") else {
        return;
    };
    let db = dir.join("store.db");
    let store = SqliteStore::open(&db, OpenMode::CreateIfMissing).unwrap();
    fill(&dir.join("filler"), 600 * 1024);
    let mut answers = Vec::new();
    for wave in 0..6 {
        // Submitted together, so they share transactions; large enough to spill the page
        // cache inside statements, where a full disk makes SQLite roll back by itself.
        let pending: Vec<_> = (0..40)
            .map(|i| {
                let id = WorkflowId::new(format!("wf-{wave}-{i}"));
                let input = vec![(wave * 40 + i) as u8; 48 * 1024];
                let answer = store.commit(vec![start(&id, input)]);
                (id, answer)
            })
            .collect();
        for (id, answer) in pending {
            answers.push((id, answer.await));
        }
    }
    let failed = answers.iter().filter(|(_, a)| a.is_err()).count();
    assert!(
        failed > 0,
        "the disk never filled up: the test shows nothing"
    );
    for (id, answer) in &answers {
        match answer {
            Ok(outcome) => {
                assert_eq!(outcome, &vec![CommitOutcome::Committed], "{id}");
                assert_eq!(visible(&db, id), (1, 1), "{id} acknowledged but not stored");
            }
            Err(error) => {
                assert!(error.is_transient(), "{id}: {error}");
                assert_eq!(
                    visible(&db, id),
                    (0, 0),
                    "{id} failed ({error}) yet visible"
                );
            }
        }
    }
    // Space again: the store carries on, and what it acknowledged survives a reopen.
    std::fs::remove_file(dir.join("filler")).unwrap();
    let id = WorkflowId::new("after");
    let outcome = store.commit(vec![start(&id, vec![1; 1024])]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    drop(store);
    let reopened = SqliteStore::open(&db, OpenMode::MustExist).unwrap();
    for (id, _) in answers.iter().filter(|(_, a)| a.is_ok()) {
        let stored = reopened.load(id, false).await.unwrap();
        assert!(stored.is_some(), "{id} lost after a reopen");
    }
    println!(
        "{} starts acknowledged, {failed} failed with a transient error and left nothing",
        answers.len() - failed
    );
}

/// An error of one operation (a start without its header: a bug) fails that operation only;
/// the operations grouped with it commit.
#[tokio::test]
async fn an_operation_that_fails_on_its_own_fails_alone() {
    let dir = TempDir::new("one-bad-op");
    let store = SqliteStore::open(dir.join("store.db"), OpenMode::CreateIfMissing).unwrap();
    let mut pending = Vec::new();
    for i in 0..50 {
        let id = WorkflowId::new(format!("wf-{i}"));
        let mut transition = start(&id, vec![i as u8]);
        if i == 25 {
            transition.header = None;
        }
        pending.push((i, store.commit(vec![transition])));
    }
    for (i, answer) in pending {
        match answer.await {
            Ok(outcome) => {
                assert_ne!(i, 25, "a start without a header was accepted");
                assert_eq!(outcome, vec![CommitOutcome::Committed]);
            }
            Err(error) => {
                assert_eq!(i, 25, "wf-{i} failed with the bad operation: {error}");
                assert!(!error.is_transient(), "{error}");
                assert!(error.to_string().contains("header"), "{error}");
            }
        }
    }
    assert!(store
        .load(&WorkflowId::new("wf-25"), false)
        .await
        .unwrap()
        .is_none());
}

/// Another process holding the write lock beyond the busy timeout (a setting) makes a
/// transient error that applied nothing; once the lock is released the same call succeeds.
#[tokio::test]
async fn a_lock_held_by_another_process_is_a_transient_error() {
    let dir = TempDir::new("locked");
    let db = dir.join("store.db");
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(100),
        ..StoreOptions::default()
    };
    let store = SqliteStore::open_with_options(&db, OpenMode::CreateIfMissing, options).unwrap();
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let id = WorkflowId::new("wf-locked");
    let started = std::time::Instant::now();
    let error = store
        .commit(vec![start(&id, vec![1])])
        .await
        .expect_err("the lock is held");
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("locked"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the busy timeout setting was not used"
    );
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(visible(&db, &id), (0, 0));
    let outcome = store.commit(vec![start(&id, vec![1])]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
}

/// The store syncs the log SQLite writes, found through a symlinked database path (before,
/// it looked for the log beside the link and failed every write).
#[tokio::test]
async fn a_symlinked_database_path_syncs_the_real_log() {
    let dir = TempDir::new("symlink");
    std::fs::create_dir_all(dir.join("real")).unwrap();
    std::fs::create_dir_all(dir.join("link")).unwrap();
    let link = dir.join("link/store.db");
    std::os::unix::fs::symlink(dir.join("real/store.db"), &link).unwrap();
    let store = SqliteStore::open(&link, OpenMode::CreateIfMissing).unwrap();
    let id = WorkflowId::new("wf-link");
    let outcome = store.commit(vec![start(&id, vec![1])]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    assert!(dir.join("real/store.db-wal").exists());
    assert!(store.stats().log_syncs > 0);
}

/// A relative path keeps meaning the file it meant at open time after the process changes
/// its working directory. Run in a child process: the working directory is process-wide.
#[test]
fn a_relative_path_survives_a_change_of_working_directory() {
    let dir = TempDir::new("relative");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "relative_path_child",
            "--test-threads=1",
        ])
        .env("INFINITIC_RELATIVE_DIR", &dir.path)
        .status()
        .unwrap();
    assert!(status.success(), "the child process failed: {status:?}");
    assert!(
        dir.join("done").exists(),
        "the child did not run its checks"
    );
}

#[test]
#[ignore = "run as a child process by a_relative_path_survives_a_change_of_working_directory"]
fn relative_path_child() {
    let Ok(dir) = std::env::var("INFINITIC_RELATIVE_DIR") else {
        return;
    };
    std::env::set_current_dir(&dir).unwrap();
    let store = SqliteStore::open("store.db", OpenMode::CreateIfMissing).unwrap();
    std::env::set_current_dir("/").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let id = WorkflowId::new("wf-relative");
        let outcome = store.commit(vec![start(&id, vec![1])]).await.unwrap();
        assert_eq!(outcome, vec![CommitOutcome::Committed]);
    });
    std::fs::write(Path::new(&dir).join("done"), b"ok").unwrap();
}

#[workflow]
pub trait Nothing {
    async fn run(&self) -> u8;
}

/// A log that cannot be synced (here: deleted under the store) fails the commit as "outcome
/// unknown", since the commit is visible but maybe not durable; from then on the handle
/// refuses everything, and a client retrying with the same id after reopening gets one
/// instance, never two.
#[tokio::test]
async fn a_failed_sync_is_an_unknown_outcome_and_breaks_the_handle_until_reopened() {
    let dir = TempDir::new("sync-failure");
    let db = dir.join("store.db");
    let store = SqliteStore::open(&db, OpenMode::CreateIfMissing).unwrap();
    let client = Client::new(store.clone());
    client
        .dispatch_with_id("before", NothingStub.run())
        .await
        .unwrap();
    std::fs::remove_file(dir.join("store.db-wal")).unwrap();
    let error = client.dispatch(NothingStub.run()).await.unwrap_err();
    let ClientError::OutcomeUnknown { id, reason } = &error else {
        panic!("expected an unknown outcome, got {error}");
    };
    assert!(reason.contains("deleted"), "{reason}");
    assert!(
        error.to_string().contains("retry with the same id"),
        "{error}"
    );
    // Refused until reopened: a later fsync could succeed without covering what was lost.
    let refused = store.load(id, false).await.unwrap_err();
    assert!(matches!(refused, StoreError::Broken(_)), "{refused}");
    assert!(!refused.is_transient());
    let topics = ["workflow:Nothing".to_string()];
    let refused = store.receive(&topics, 1, Duration::from_secs(1)).await;
    assert!(matches!(refused, Err(StoreError::Broken(_))), "{refused:?}");
    drop((client, store));

    // Opened again once the broken handle's connection has closed.
    let mut reopened = SqliteStore::open(&db, OpenMode::MustExist);
    for _ in 0..100 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        reopened = SqliteStore::open(&db, OpenMode::MustExist);
    }
    let store = reopened.unwrap();
    let client = Client::new(store.clone());
    let handle = client
        .dispatch_with_id(id.clone(), NothingStub.run())
        .await
        .unwrap();
    assert_eq!(handle.id(), id);
    assert_eq!(handle.status().await.unwrap(), WorkflowState::Pending);
}

/// A queue row whose columns have the wrong types (written by another tool, or a bug) goes to
/// the dead letters with a reason; the rows after it are delivered.
#[tokio::test]
async fn an_unreadable_queue_row_is_dead_lettered_and_the_rest_flow() {
    let dir = TempDir::new("bad-row");
    let db = dir.join("store.db");
    let store = SqliteStore::open(&db, OpenMode::CreateIfMissing).unwrap();
    let topic = "service:Echo".to_string();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "INSERT INTO queue (topic, key, payload, visible_at) VALUES ('service:Echo', 'k', 'text', 0);
         INSERT INTO queue (topic, key, payload, visible_at) VALUES ('service:Echo', 'k', 42, 0);
         INSERT INTO queue (topic, key, payload, visible_at) VALUES ('service:Echo', x'6b', x'01', 0);
         INSERT INTO queue (topic, key, payload, visible_at) VALUES ('service:Echo', 'k', x'02', 'soon');",
    )
    .unwrap();
    store
        .publish(vec![Outgoing::new(
            topic.clone(),
            "k",
            vec![9],
            Timestamp::from_millis(0),
        )])
        .await
        .unwrap();
    let received = store
        .receive(std::slice::from_ref(&topic), 10, Duration::from_secs(30))
        .await
        .unwrap();
    let payloads: Vec<Vec<u8>> = received.deliveries.into_iter().map(|d| d.payload).collect();
    assert_eq!(payloads, vec![vec![9]]);
    let letters = store.dead_letters(10).await.unwrap();
    let reasons: Vec<&str> = letters.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(letters.len(), 4, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("payload is TEXT")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("payload is INTEGER")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("key is BLOB")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("visibility time is TEXT")),
        "{reasons:?}"
    );
    assert!(letters.iter().any(|d| d.payload == b"text"));
}
