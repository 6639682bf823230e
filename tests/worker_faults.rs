//! Workers under store faults: a transient store error never dead-letters an event (it is
//! delivered again, with backoff), an instance whose stored form cannot be decoded parks with
//! a visible reason and keeps its events, and after a full disk every acknowledged workflow
//! finishes once space is freed, without a restart.
//!
//! The full-disk test mounts a small tmpfs, so it needs root; it is skipped with a message
//! otherwise.

use infinitic::prelude::*;
use infinitic::store::sqlite::OpenMode;
use infinitic::store::{
    Activity, CommitOutcome, DeadLetter, Finished, LocalHandoff, Outgoing, Pending, Received,
    Settlement, StoreError, StoredWorkflow, Transition,
};
use infinitic::{
    Client, SqliteStore, StateStore, Transport, Worker, WorkerConfig, WorkflowId, WorkflowState,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/dirs.rs"]
mod dirs;
use dirs::{fill, TempDir};

#[service]
pub trait Adder {
    async fn add(&self, n: u64, pad: Vec<u8>) -> u64;
}

struct AdderImpl;
impl Adder for AdderImpl {
    async fn add(&self, n: u64, _pad: Vec<u8>) -> u64 {
        n + 1
    }
}

#[workflow]
pub trait Steps {
    async fn run(&self, steps: u64, pad: usize) -> u64;
}

#[derive(Default)]
pub struct StepsImpl {
    adder: AdderStub,
}

#[workflow]
impl Steps for StepsImpl {
    async fn run(&self, steps: u64, pad: usize) -> u64 {
        let mut n = 0;
        for _ in 0..steps {
            n = match self.adder.add(n, vec![7; pad]).await {
                Ok(next) => next,
                Err(_) => return u64::MAX,
            };
        }
        n
    }
}

#[workflow]
pub trait Napper {
    async fn run(&self, ms: u64) -> u64;
}

#[derive(Default)]
pub struct NapperImpl {
    adder: AdderStub,
}

#[workflow]
impl Napper for NapperImpl {
    async fn run(&self, ms: u64) -> u64 {
        workflow::sleep(Duration::from_millis(ms)).await;
        self.adder.add(1, Vec::new()).await.unwrap_or(u64::MAX)
    }
}

/// Short leases and polls, and no cache: every event loads its instance from the store.
fn config() -> WorkerConfig {
    WorkerConfig {
        cache_capacity: 0,
        poll_interval: Duration::from_millis(10),
        workflow_lease: Duration::from_millis(500),
        task_timeout: Duration::from_secs(2),
        task_lease_margin: Duration::from_millis(500),
        ..WorkerConfig::default()
    }
}

/// The SQLite store, with every other `load` failing as SQLite does when another process
/// holds the database locked beyond the busy timeout (`a_lock_held_by_another_process_is_a_
/// transient_error` in `store_faults.rs` shows that error on the real store).
#[derive(Clone)]
struct FlakyLoads {
    store: SqliteStore,
    loads: Arc<AtomicU64>,
}

impl Transport for FlakyLoads {
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), StoreError> {
        self.store.publish(messages).await
    }
    async fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Received, StoreError> {
        self.store.receive(topics, max, lease).await
    }
    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), StoreError> {
        self.store.settle(settlements).await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.store.dead_letters(limit).await
    }
    fn local_handoff(&self) -> Option<&dyn LocalHandoff> {
        self.store.local_handoff()
    }
    fn activity(&self) -> Activity {
        self.store.activity()
    }
}

impl StateStore for FlakyLoads {
    async fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        if self.loads.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
            return Err(StoreError::Unavailable("database is locked".into()));
        }
        self.store.load(id, with_history).await
    }
    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>> {
        self.store.commit(transitions)
    }
    fn finished(&self) -> Finished {
        self.store.finished()
    }
    fn settles_on_commit(&self) -> bool {
        self.store.settles_on_commit()
    }
}

/// Before, a failed load dead-lettered the event and the instance stayed Running forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_store_error_delays_an_event_and_never_dead_letters_it() {
    let dir = TempDir::new("flaky");
    let store = SqliteStore::open(dir.join("store.db"), OpenMode::CreateIfMissing).unwrap();
    let flaky = FlakyLoads {
        store: store.clone(),
        loads: Arc::new(AtomicU64::new(0)),
    };
    let worker = Worker::new(flaky.clone())
        .service(AdderDispatcher::new(AdderImpl))
        .workflow(StepsImpl::default)
        .config(config())
        .start();
    let client = Client::new(store.clone());
    let handles = futures_all(&client, 5).await;
    for handle in handles {
        let result = tokio::time::timeout(Duration::from_secs(30), handle.result())
            .await
            .expect("the workflow finishes despite failing loads")
            .unwrap();
        assert_eq!(result, 10);
    }
    assert!(
        flaky.loads.load(Ordering::Relaxed) > 10,
        "loads were tested"
    );
    assert_eq!(store.dead_letters(10).await.unwrap(), Vec::new());
    worker.shutdown().await;
}

async fn futures_all(
    client: &Client<SqliteStore>,
    count: u64,
) -> Vec<infinitic::WorkflowHandle<u64, SqliteStore>> {
    let mut handles = Vec::new();
    for i in 0..count {
        let id = format!("steps-{i}");
        handles.push(
            client
                .dispatch_with_id(id, StepsStub.run(10, 0))
                .await
                .unwrap(),
        );
    }
    handles
}

/// A stored history that cannot be decoded (damaged, or written by an incompatible build)
/// parks the instance with the reason in its status; its timer event is kept, not
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_instance_parks_with_a_visible_reason_and_keeps_its_events() {
    let dir = TempDir::new("undecodable");
    let db = dir.join("store.db");
    let store = SqliteStore::open(&db, OpenMode::CreateIfMissing).unwrap();
    let worker = Worker::new(store.clone())
        .service(AdderDispatcher::new(AdderImpl))
        .workflow(NapperImpl::default)
        .config(config())
        .start();
    let client = Client::new(store.clone());
    let handle = client
        .dispatch_with_id("napper", NapperStub.run(800))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.status().await.unwrap() != WorkflowState::Running {
        assert!(Instant::now() < deadline, "the workflow did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Damage its history while it waits on its timer.
    let c = rusqlite::Connection::open(&db).unwrap();
    let damaged = c
        .execute(
            "UPDATE history SET events = x'c1' WHERE workflow_id = 'napper'",
            [],
        )
        .unwrap();
    assert!(damaged > 0);
    let reason = loop {
        if let WorkflowState::Parked(reason) = handle.status().await.unwrap() {
            break reason;
        }
        assert!(Instant::now() < deadline, "the instance did not park");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(reason.contains("cannot be decoded"), "{reason}");
    assert!(reason.contains("history"), "{reason}");
    // Its events wait (delivered again later and later), never dead-lettered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.dead_letters(10).await.unwrap(), Vec::new());
    let queued: i64 = c
        .query_row("SELECT count(*) FROM queue WHERE key = 'napper'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(queued, 1, "the timer event is kept");
    worker.shutdown().await;
}

/// Item 7 of the store-faults issue: on a 3 MiB filesystem, workers run into a full disk;
/// freeing 1 MiB lets every acknowledged workflow finish, with the same worker (before, the
/// log took every freed byte before SQLite's automatic checkpoint could run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_full_disk_every_acknowledged_workflow_finishes_once_space_is_freed() {
    let Some(fs) = TempDir::small_filesystem("full-disk", "3m") else {
        return;
    };
    let store = SqliteStore::open(fs.join("store.db"), OpenMode::CreateIfMissing).unwrap();
    let client = Client::new(store.clone());
    let filler = fs.join("filler");
    let size = fill(&filler, 1024 * 1024);
    // Start workflows until starts fail for space: all their steps are still to run, more
    // than the log can hold in the space freed below.
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..1000 {
        match client
            .dispatch_with_id(format!("wf-{i}"), StepsStub.run(STEPS, 0))
            .await
        {
            Ok(handle) => acknowledged.push(handle),
            Err(error) => {
                assert!(
                    matches!(&error, infinitic::ClientError::Store(e) if e.is_transient()),
                    "{error}"
                );
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
        }
    }
    assert!(
        refused > 0,
        "the disk never filled up: the test shows nothing"
    );
    let worker = Worker::new(store.clone())
        .service(AdderDispatcher::new(AdderImpl))
        .workflow(StepsImpl::default)
        .config(WorkerConfig {
            cache_capacity: 10_000,
            ..config()
        })
        .start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let done_while_full = count_done(&acknowledged).await;
    assert!(
        done_while_full < acknowledged.len(),
        "every workflow finished before the disk was freed: the test shows nothing"
    );
    // Free 1 MiB.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(size.saturating_sub(1024 * 1024))
        .unwrap();
    let freed = Instant::now();
    for handle in &acknowledged {
        let left = Duration::from_secs(60).saturating_sub(freed.elapsed());
        let result = tokio::time::timeout(left, handle.result())
            .await
            .unwrap_or_else(|_| {
                let files: Vec<_> = std::fs::read_dir(&fs.path)
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        (e.file_name(), e.metadata().unwrap().len())
                    })
                    .collect();
                panic!(
                    "{} did not finish after space was freed ({} acknowledged; files {files:?})",
                    handle.id(),
                    acknowledged.len(),
                )
            })
            .unwrap();
        assert_eq!(result, STEPS, "{}", handle.id());
    }
    println!(
        "{} workflows acknowledged ({refused} starts refused for space), {done_while_full} done \
         while the disk was full; all done {:.1?} after 1 MiB was freed",
        acknowledged.len(),
        freed.elapsed()
    );
    assert_eq!(store.dead_letters(10).await.unwrap(), Vec::new());
    worker.shutdown().await;
}

/// Steps of each workflow in the full-disk test.
const STEPS: u64 = 60;

async fn count_done(handles: &[infinitic::WorkflowHandle<u64, SqliteStore>]) -> usize {
    let mut done = 0;
    for handle in handles {
        if let Ok(Some(_)) = handle.try_result().await {
            done += 1;
        }
    }
    done
}
