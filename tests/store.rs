//! The contract of the backends, in two suites.
//!
//! - [`state_contract`]: the contract of a state store, ONE suite run against every store:
//!   SQLite on a real file (both durable modes), the in-memory store, the in-memory state
//!   store alone and, with the `postgres` feature, PostgreSQL. A transition applies atomically
//!   (state, history, outbox, consumed message) or not at all, compare-and-set on the version
//!   and on the consumed message, across handles of one store, in submission order, and
//!   acknowledged commits are there after a reopen.
//! - The checks below it, for backends that are also the transport (SQLite, in memory): the
//!   consumed message is a queue row, removed by the commit, and what a commit publishes is
//!   queued.

use infinitic::message::MessageId;
use infinitic::store::memory::MemoryStore;
use infinitic::store::sqlite::{Durability, OpenMode};
use infinitic::store::{
    CommitOutcome, Consumed, DeliveryId, Outgoing, Settlement, Transition, WorkflowHeader,
};
use infinitic::{
    Completion, HistoryEvent, MethodRun, SqliteStore, StateStore, StepOutcome, Timestamp,
    Transport, WorkflowId, WorkflowState,
};
use std::path::PathBuf;
use std::time::Duration;

struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str, durability: Durability) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "infinitic-store-test-{name}-{durability:?}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn open(&self, durability: Durability) -> SqliteStore {
        SqliteStore::open_with(
            self.0.join("store.db"),
            OpenMode::CreateIfMissing,
            durability,
        )
        .unwrap()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A backend under test: opens handles on one store (for a file, opening it again).
trait Backend {
    type Store: Transport + StateStore + Clone;
    fn open(&self) -> Self::Store;
}

/// The SQLite store on a file of its own.
struct Sqlite(TempDb, Durability);

impl Sqlite {
    fn new(name: &str, durability: Durability) -> Self {
        Self(TempDb::new(name, durability), durability)
    }
}

impl Backend for Sqlite {
    type Store = SqliteStore;
    fn open(&self) -> SqliteStore {
        self.0.open(self.1)
    }
}

/// The in-memory store: every handle shares its contents.
struct Memory(MemoryStore);

impl Memory {
    fn new(_name: &str) -> Self {
        Self(MemoryStore::new())
    }
}

impl Backend for Memory {
    type Store = MemoryStore;
    fn open(&self) -> MemoryStore {
        self.0.clone()
    }
}

#[cfg(feature = "postgres")]
#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod pg;
#[path = "support/state_contract.rs"]
mod state_contract;

const TOPIC: &str = "workflow:Test";
const LEASE: Duration = Duration::from_secs(30);

fn header() -> WorkflowHeader {
    WorkflowHeader {
        generation: infinitic::Generation::FIRST,
        workflow: "Test".into(),
        method: "run".into(),
        input: vec![1, 2, 3],
        started_at: Timestamp::from_millis(1_000),
        parent: None,
    }
}

fn completed(position: u32) -> HistoryEvent {
    HistoryEvent::Completed(Completion {
        run: MethodRun(0),
        position,
        at: Timestamp::from_millis(2_000),
        outcome: StepOutcome::Completed(vec![position as u8]),
    })
}

fn message(topic: &str, body: u8) -> Outgoing {
    Outgoing::new(topic, "key", vec![body], Timestamp::from_millis(0))
}

/// A transition of `id` from `version` that appends `event`, publishes `outbox` and consumes
/// `consumed`.
fn step(
    id: &WorkflowId,
    version: u64,
    event: HistoryEvent,
    outbox: Vec<Outgoing>,
    consumed: Option<DeliveryId>,
) -> Transition {
    Transition {
        workflow_id: id.clone(),
        expected_version: version,
        header: (version == 0).then(header),
        state: WorkflowState::Running,
        append: vec![event],
        outbox,
        consumed: consumed.map(|delivery| Consumed {
            message: MessageId::new(format!("test:{delivery}")),
            delivery,
        }),
        dead_letter: None,
        report_to: None,
    }
}

/// Publishes one message on `topic` and leases it back.
async fn leased<S: Transport + StateStore>(store: &S, topic: &str, body: u8) -> DeliveryId {
    store.publish(vec![message(topic, body)]).await.unwrap();
    let received = store.receive(&[topic.to_string()], 1, LEASE).await.unwrap();
    assert_eq!(received.deliveries.len(), 1);
    assert_eq!(received.deliveries[0].payload, vec![body]);
    received.deliveries[0].id
}

/// Creates `id` at version 1 with history `[completed(0)]`.
async fn create<S: Transport + StateStore>(store: &S, id: &WorkflowId) {
    let outcome = store
        .commit(vec![step(id, 0, completed(0), Vec::new(), None)])
        .await
        .unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
}

/// Commits the step of `id` from `version` that consumes `event`, appends `completed(1)` and
/// publishes one message on `service:Next`.
async fn step_consuming<S: Transport + StateStore>(
    store: &S,
    id: &WorkflowId,
    version: u64,
    event: DeliveryId,
) -> Vec<CommitOutcome> {
    let next = vec![message("service:Next", 9)];
    let transition = step(id, version, completed(1), next, Some(event));
    store.commit(vec![transition]).await.unwrap()
}

/// `id` is as [`create`] left it, and nothing was published on `service:Next`.
async fn assert_as_created<S: Transport + StateStore>(store: &S, id: &WorkflowId) {
    let stored = store.load(id, true).await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.history, vec![completed(0)]);
    assert!(queued(store, "service:Next").await.is_empty());
}

async fn queued<S: Transport + StateStore>(store: &S, topic: &str) -> Vec<Vec<u8>> {
    let received = store
        .receive(&[topic.to_string()], 100, LEASE)
        .await
        .unwrap();
    received.deliveries.into_iter().map(|d| d.payload).collect()
}

async fn a_transition_applies_state_history_outbox_and_consumption_together(backend: impl Backend) {
    let store = backend.open();
    let id = WorkflowId::new("wf-1");
    create(&store, &id).await;
    let event = leased(&store, TOPIC, 7).await;
    let outcome = step_consuming(&store, &id, 1, event).await;
    assert_eq!(outcome, vec![CommitOutcome::Committed]);

    let stored = store.load(&id, true).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.header, header());
    assert_eq!(stored.history, vec![completed(0), completed(1)]);
    assert_eq!(queued(&store, "service:Next").await, vec![vec![9]]);
    // The consumed event is gone: settling it now finds nothing.
    assert!(queued(&store, TOPIC).await.is_empty());
}

async fn a_stale_version_is_a_conflict_and_writes_nothing(backend: impl Backend) {
    let store = backend.open();
    let id = WorkflowId::new("wf-1");
    create(&store, &id).await;
    let event = leased(&store, TOPIC, 7).await;
    let outcome = step_consuming(&store, &id, 5, event).await;
    assert_eq!(outcome, vec![CommitOutcome::Conflict]);
    assert_as_created(&store, &id).await;
    // The event is still there, leased: acking it now removes it.
    store
        .settle(vec![Settlement::Ack {
            delivery: event,
            publish: vec![message("service:Acked", 1)],
        }])
        .await
        .unwrap();
    assert_eq!(queued(&store, "service:Acked").await, vec![vec![1]]);
}

async fn an_event_already_consumed_elsewhere_is_a_conflict_and_writes_nothing(
    backend: impl Backend,
) {
    let store = backend.open();
    let id = WorkflowId::new("wf-1");
    create(&store, &id).await;
    let event = leased(&store, TOPIC, 7).await;
    // Another consumer (whose lease it was) settled it first.
    store
        .settle(vec![Settlement::Ack {
            delivery: event,
            publish: Vec::new(),
        }])
        .await
        .unwrap();
    let outcome = step_consuming(&store, &id, 1, event).await;
    assert_eq!(outcome, vec![CommitOutcome::Conflict]);
    assert_as_created(&store, &id).await;
}

/// Whatever the mode, an operation that wrote is answered only once it is on disk; with
/// `Full` the sync thread fsyncs the log for it, grouping concurrent commits.
async fn answers_come_after_the_fsync_of_their_commit(durability: Durability) {
    let backend = Sqlite::new("answers-after-fsync", durability);
    let store = backend.open();
    let start = store.stats();
    for n in 0..30u32 {
        let id = WorkflowId::new(format!("wf-{n}"));
        store
            .commit(vec![step(&id, 0, completed(n), Vec::new(), None)])
            .await
            .unwrap();
        let stats = store.stats().since(&start);
        assert_eq!(stats.answered_writes, stats.written);
        match durability {
            // One commit at a time: each needed its own fsync, done before its answer.
            Durability::Full => assert_eq!(stats.log_syncs, u64::from(n) + 1),
            // SQLite synced inside the commit.
            _ => assert_eq!(stats.log_syncs, 0),
        }
    }
    // Many commits at once: several share one fsync, and still each is answered after it.
    let before = store.stats();
    let commits: Vec<_> = (0..200u32)
        .map(|n| {
            let id = WorkflowId::new(format!("wf-many-{n}"));
            store.commit(vec![step(&id, 0, completed(n), Vec::new(), None)])
        })
        .collect();
    for commit in commits {
        assert_eq!(commit.await.unwrap(), vec![CommitOutcome::Committed]);
    }
    let stats = store.stats().since(&before);
    assert_eq!(stats.answered_writes, stats.written);
    if durability == Durability::Full {
        assert!(stats.log_syncs >= 1);
        assert!(stats.log_syncs <= stats.written);
    }
}

/// Runs each check on every backend that is also a transport: SQLite in both durable modes,
/// and in memory. The checks of the state store alone are in [`state_contract`].
macro_rules! on_every_backend {
    ($($check:ident),* $(,)?) => {
        mod sqlite_full {
            use infinitic::store::sqlite::Durability;
            $(#[tokio::test]
            async fn $check() {
                let name = stringify!($check);
                super::$check(super::Sqlite::new(name, Durability::Full)).await
            })*
        }
        mod sqlite_full_before_visible {
            use infinitic::store::sqlite::Durability;
            $(#[tokio::test]
            async fn $check() {
                let name = stringify!($check);
                super::$check(super::Sqlite::new(name, Durability::FullBeforeVisible)).await
            })*
        }
        mod memory {
            $(#[tokio::test]
            async fn $check() {
                super::$check(super::Memory::new(stringify!($check))).await
            })*
        }
    };
}

on_every_backend!(
    a_transition_applies_state_history_outbox_and_consumption_together,
    a_stale_version_is_a_conflict_and_writes_nothing,
    an_event_already_consumed_elsewhere_is_a_conflict_and_writes_nothing,
);

mod sqlite_fsync {
    use infinitic::store::sqlite::Durability;

    #[tokio::test]
    async fn full() {
        super::answers_come_after_the_fsync_of_their_commit(Durability::Full).await
    }

    #[tokio::test]
    async fn full_before_visible() {
        super::answers_come_after_the_fsync_of_their_commit(Durability::FullBeforeVisible).await
    }
}
