//! The contract of a state store: one suite, run against every store (see the macro calls at
//! the end). Stores differ in one thing only, which [`StateBackend`] hides: how a consumed
//! message is recognised. A store that is its own transport (SQLite, the in-memory store)
//! removes the message's queue row in the commit (a second consumption finds no row); a state
//! store alone (beside a broker) records the message's id (a redelivery, with a new delivery
//! handle, finds the id). Checks that need one kind say so and run only on stores of it.

use super::{completed, header, message, Memory, Sqlite, TOPIC};
use infinitic::message::MessageId;
use infinitic::store::memory_state::MemoryStateStore;
use infinitic::store::{CommitOutcome, Consumed, DeliveryId, Outgoing, Transition};
use infinitic::{StateStore, Timestamp, Transport, WorkflowId, WorkflowState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A state store under test.
pub(super) trait StateBackend {
    type Store: StateStore + Clone;
    /// A handle on the store: for a database, opened again (new connections, new writer).
    async fn open(&self) -> Self::Store;
    /// A message delivered to `store`, for a transition to consume.
    async fn delivered(&self, store: &Self::Store, body: u8) -> Consumed;
    /// `consumed` as its transport would deliver it again after it was consumed.
    fn redelivered(&self, consumed: &Consumed) -> Consumed;
    /// What committed transitions published on `topic`, oldest first.
    async fn published(&self, store: &Self::Store, topic: &str) -> Vec<Vec<u8>>;
}

/// A store that is its own transport: a consumed message is a queue row, removed by the
/// commit; publishing is queueing.
macro_rules! queue_backend {
    ($backend:ty, $store:ty) => {
        impl StateBackend for $backend {
            type Store = $store;
            async fn open(&self) -> $store {
                super::Backend::open(self)
            }
            async fn delivered(&self, store: &$store, body: u8) -> Consumed {
                let delivery = super::leased(store, TOPIC, body).await;
                Consumed {
                    message: MessageId::new(format!("test:{delivery}")),
                    delivery,
                }
            }
            fn redelivered(&self, consumed: &Consumed) -> Consumed {
                // Its row is the delivery: once consumed, there is no other.
                consumed.clone()
            }
            async fn published(&self, store: &$store, topic: &str) -> Vec<Vec<u8>> {
                let topics = [topic.to_string()];
                let received = store.receive(&topics, 100, super::LEASE).await.unwrap();
                received.deliveries.into_iter().map(|d| d.payload).collect()
            }
        }
    };
}

queue_backend!(Sqlite, infinitic::SqliteStore);
queue_backend!(Memory, infinitic::MemoryStore);

/// Message ids unique across the tests of this process (a database outlives one test).
fn message_id(body: u8) -> MessageId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    MessageId::new(format!("m-{}-{n}-{body}", std::process::id()))
}

/// A state store alone records message ids; a transport would deliver them.
fn delivered_alone(body: u8) -> Consumed {
    Consumed {
        message: message_id(body),
        delivery: DeliveryId::new(u64::from(body)),
    }
}

/// A broker redelivers with a new handle, same message id.
fn redelivered_alone(consumed: &Consumed) -> Consumed {
    Consumed {
        message: consumed.message.clone(),
        delivery: DeliveryId::new(consumed.delivery.get() + 1_000),
    }
}

/// What a state store alone published: its outbox.
async fn outbox_on(store: &impl StateStore, topic: &str) -> Vec<Vec<u8>> {
    let entries = store.outbox(1_000).await.unwrap();
    let on_topic = entries.into_iter().filter(|e| e.message.topic == topic);
    on_topic.map(|e| e.message.payload).collect()
}

/// The in-memory state store alone: every handle shares its contents.
pub(super) struct MemoryAlone(MemoryStateStore);

impl StateBackend for MemoryAlone {
    type Store = MemoryStateStore;
    async fn open(&self) -> MemoryStateStore {
        self.0.clone()
    }
    async fn delivered(&self, _: &MemoryStateStore, body: u8) -> Consumed {
        delivered_alone(body)
    }
    fn redelivered(&self, consumed: &Consumed) -> Consumed {
        redelivered_alone(consumed)
    }
    async fn published(&self, store: &MemoryStateStore, topic: &str) -> Vec<Vec<u8>> {
        outbox_on(store, topic).await
    }
}

/// PostgreSQL: a schema of its own on the test server; each `open` connects again.
#[cfg(feature = "postgres")]
pub(super) struct Postgres {
    server: super::pg::Server,
    schema: String,
}

#[cfg(feature = "postgres")]
impl StateBackend for Postgres {
    type Store = infinitic::store::postgres::PostgresStore;
    async fn open(&self) -> Self::Store {
        self.server.store(&self.schema).await
    }
    async fn delivered(&self, _: &Self::Store, body: u8) -> Consumed {
        delivered_alone(body)
    }
    fn redelivered(&self, consumed: &Consumed) -> Consumed {
        redelivered_alone(consumed)
    }
    async fn published(&self, store: &Self::Store, topic: &str) -> Vec<Vec<u8>> {
        outbox_on(store, topic).await
    }
}

/// Backends by name, `None` when the store is missing (a test then skips, except under CI).
pub(super) mod make {
    use super::super::{Memory, Sqlite};
    use infinitic::store::sqlite::Durability;

    pub(crate) async fn sqlite_full(name: &str) -> Option<Sqlite> {
        Some(Sqlite::new(&format!("contract-{name}"), Durability::Full))
    }
    pub(crate) async fn sqlite_full_before_visible(name: &str) -> Option<Sqlite> {
        let name = format!("contract-{name}");
        Some(Sqlite::new(&name, Durability::FullBeforeVisible))
    }
    pub(crate) async fn memory(name: &str) -> Option<Memory> {
        Some(Memory::new(name))
    }
    pub(crate) async fn memory_alone(_: &str) -> Option<super::MemoryAlone> {
        Some(super::MemoryAlone(Default::default()))
    }
    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres(name: &str) -> Option<super::Postgres> {
        let server = super::super::pg::server()?;
        let schema = super::super::pg::unique(name);
        Some(super::Postgres { server, schema })
    }
}

/// A transition of `id` from `version` appending `completed(position)`.
fn transition(
    id: &WorkflowId,
    version: u64,
    position: u32,
    outbox: Vec<Outgoing>,
    consumed: Option<Consumed>,
) -> Transition {
    Transition {
        workflow_id: id.clone(),
        expected_version: version,
        header: (version == 0).then(header),
        state: WorkflowState::Running,
        append: vec![completed(position)],
        outbox,
        consumed,
        dead_letter: None,
        report_to: None,
    }
}

async fn commit<S: StateStore>(store: &S, transitions: Vec<Transition>) -> Vec<CommitOutcome> {
    store.commit(transitions).await.unwrap()
}

/// Creates `id` at version 1 with history `[completed(0)]`.
async fn create<S: StateStore>(store: &S, id: &WorkflowId) {
    let created = commit(store, vec![transition(id, 0, 0, Vec::new(), None)]).await;
    assert_eq!(created, vec![CommitOutcome::Committed]);
}

/// `id` is at `version` with `events` completions in its history.
async fn assert_at<S: StateStore>(store: &S, id: &WorkflowId, version: u64, events: u32) {
    let stored = store.load(id, true).await.unwrap().unwrap();
    assert_eq!(stored.version, version);
    assert_eq!(
        stored.history,
        (0..events).map(completed).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Any state store.

pub(super) async fn a_transition_writes_state_history_outbox_and_consumption_together(
    backend: impl StateBackend,
) {
    let store = backend.open().await;
    let id = WorkflowId::new("wf-1");
    create(&store, &id).await;
    let event = backend.delivered(&store, 7).await;
    let next = vec![message("service:Next", 9), message("service:Next", 10)];
    let outcome = commit(&store, vec![transition(&id, 1, 1, next, Some(event))]).await;
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    let stored = store.load(&id, true).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.header, header());
    assert_eq!(stored.state, WorkflowState::Running);
    assert_eq!(stored.history, vec![completed(0), completed(1)]);
    let published = backend.published(&store, "service:Next").await;
    assert_eq!(published, vec![vec![9], vec![10]]);
}

pub(super) async fn a_stale_version_is_a_conflict_and_writes_nothing(backend: impl StateBackend) {
    let store = backend.open().await;
    let id = WorkflowId::new("wf-1");
    create(&store, &id).await;
    let event = backend.delivered(&store, 7).await;
    let stale = transition(
        &id,
        5,
        1,
        vec![message("service:A", 1)],
        Some(event.clone()),
    );
    assert_eq!(
        commit(&store, vec![stale]).await,
        vec![CommitOutcome::Conflict]
    );
    assert_at(&store, &id, 1, 1).await;
    assert!(backend.published(&store, "service:A").await.is_empty());
    // The message was not consumed: a step from the right version still consumes it.
    let fresh = transition(&id, 1, 1, Vec::new(), Some(event));
    assert_eq!(
        commit(&store, vec![fresh]).await,
        vec![CommitOutcome::Committed]
    );
}

pub(super) async fn a_message_consumed_again_is_a_conflict_and_writes_nothing(
    backend: impl StateBackend,
) {
    let store = backend.open().await;
    let id = WorkflowId::new("wf-1");
    create(&store, &id).await;
    let event = backend.delivered(&store, 7).await;
    let first = transition(&id, 1, 1, Vec::new(), Some(event.clone()));
    assert_eq!(
        commit(&store, vec![first]).await,
        vec![CommitOutcome::Committed]
    );
    // Delivered again (for a broker: after a restart, with a new handle), from the current
    // version: recognised all the same.
    let again = backend.redelivered(&event);
    let second = transition(&id, 2, 2, vec![message("service:A", 1)], Some(again));
    assert_eq!(
        commit(&store, vec![second]).await,
        vec![CommitOutcome::Conflict]
    );
    assert_at(&store, &id, 2, 2).await;
    assert!(backend.published(&store, "service:A").await.is_empty());
}

pub(super) async fn a_message_consumed_twice_in_one_batch_applies_once(backend: impl StateBackend) {
    let store = backend.open().await;
    let (a, b) = (WorkflowId::new("wf-a"), WorkflowId::new("wf-b"));
    create(&store, &a).await;
    create(&store, &b).await;
    let event = backend.delivered(&store, 7).await;
    let again = backend.redelivered(&event);
    let outcomes = commit(
        &store,
        vec![
            transition(&a, 1, 1, Vec::new(), Some(event)),
            transition(&b, 1, 1, vec![message("service:B", 2)], Some(again)),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![CommitOutcome::Committed, CommitOutcome::Conflict]
    );
    assert_at(&store, &b, 1, 1).await;
    assert!(backend.published(&store, "service:B").await.is_empty());
}

pub(super) async fn creating_an_instance_twice_is_a_conflict(backend: impl StateBackend) {
    let store = backend.open().await;
    let id = WorkflowId::new("wf-1");
    let outcomes = commit(
        &store,
        vec![
            transition(&id, 0, 0, Vec::new(), None),
            transition(&id, 0, 5, vec![message("service:Next", 9)], None),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![CommitOutcome::Committed, CommitOutcome::Conflict]
    );
    assert_at(&store, &id, 1, 1).await;
    assert!(backend.published(&store, "service:Next").await.is_empty());
}

pub(super) async fn creating_without_a_header_is_refused(backend: impl StateBackend) {
    let store = backend.open().await;
    let id = WorkflowId::new("wf-1");
    let headless = Transition {
        header: None,
        ..transition(&id, 0, 0, Vec::new(), None)
    };
    assert!(store.commit(vec![headless]).await.is_err());
    assert_eq!(store.load(&id, false).await.unwrap(), None);
}

pub(super) async fn one_batch_mixes_committed_and_conflicting_transitions(
    backend: impl StateBackend,
) {
    let store = backend.open().await;
    let (a, b) = (WorkflowId::new("wf-a"), WorkflowId::new("wf-b"));
    let created = commit(
        &store,
        vec![
            transition(&a, 0, 0, Vec::new(), None),
            transition(&b, 0, 0, Vec::new(), None),
        ],
    )
    .await;
    assert_eq!(created, vec![CommitOutcome::Committed; 2]);
    let outcomes = commit(
        &store,
        vec![
            transition(&a, 1, 1, vec![message("service:A", 1)], None),
            transition(&b, 9, 1, vec![message("service:B", 2)], None),
            transition(&a, 2, 2, vec![message("service:A", 3)], None),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![
            CommitOutcome::Committed,
            CommitOutcome::Conflict,
            CommitOutcome::Committed
        ]
    );
    assert_at(&store, &a, 3, 3).await;
    assert_at(&store, &b, 1, 1).await;
    let published = backend.published(&store, "service:A").await;
    assert_eq!(published, vec![vec![1], vec![3]]);
    assert!(backend.published(&store, "service:B").await.is_empty());
}

pub(super) async fn commits_apply_in_the_order_they_are_submitted(backend: impl StateBackend) {
    let store = backend.open().await;
    let id = WorkflowId::new("wf-1");
    // Each computed from the previous one's version, all submitted before any is awaited.
    let pending: Vec<_> = (0..50u32)
        .map(|n| store.commit(vec![transition(&id, u64::from(n), n, Vec::new(), None)]))
        .collect();
    for commit in pending {
        assert_eq!(commit.await.unwrap(), vec![CommitOutcome::Committed]);
    }
    assert_at(&store, &id, 50, 50).await;
}

pub(super) async fn two_handles_see_each_other_and_compare_and_set_across_them(
    backend: impl StateBackend,
) {
    let (first, second) = (backend.open().await, backend.open().await);
    let id = WorkflowId::new("wf-1");
    create(&first, &id).await;
    // Both computed a step from version 1; only one applies.
    let won = commit(&second, vec![transition(&id, 1, 1, Vec::new(), None)]).await;
    let lost = commit(&first, vec![transition(&id, 1, 7, Vec::new(), None)]).await;
    assert_eq!(won, vec![CommitOutcome::Committed]);
    assert_eq!(lost, vec![CommitOutcome::Conflict]);
    assert_at(&first, &id, 2, 2).await;
}

pub(super) async fn acknowledged_commits_are_there_after_a_reopen(backend: impl StateBackend) {
    let id = WorkflowId::new("wf-1");
    {
        let store = backend.open().await;
        for position in 0..20 {
            let version = u64::from(position);
            let outbox = match position {
                19 => vec![message("service:Later", 3)],
                _ => Vec::new(),
            };
            let step = transition(&id, version, position, outbox, None);
            assert_eq!(
                commit(&store, vec![step]).await,
                vec![CommitOutcome::Committed]
            );
        }
    }
    let store = backend.open().await;
    assert_at(&store, &id, 20, 20).await;
    let published = backend.published(&store, "service:Later").await;
    assert_eq!(published, vec![vec![3]]);
}

pub(super) async fn loads_with_or_without_history_and_of_unknown_instances(
    backend: impl StateBackend,
) {
    let store = backend.open().await;
    let id = WorkflowId::new("wf-1");
    assert_eq!(store.load(&id, true).await.unwrap(), None);
    create(&store, &id).await;
    let stored = store.load(&id, false).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.history.len()), (1, 0));
    // A step that appends nothing adds no history.
    let quiet = Transition {
        append: Vec::new(),
        ..transition(&id, 1, 1, Vec::new(), None)
    };
    assert_eq!(
        commit(&store, vec![quiet]).await,
        vec![CommitOutcome::Committed]
    );
    assert_at(&store, &id, 2, 1).await;
}

pub(super) async fn a_pending_instance_takes_its_start_time_and_final_states_are_announced(
    backend: impl StateBackend,
) {
    let store = backend.open().await;
    let id = WorkflowId::new("wf-1");
    let pending = Transition {
        state: WorkflowState::Pending,
        ..transition(&id, 0, 0, Vec::new(), None)
    };
    assert_eq!(
        commit(&store, vec![pending]).await,
        vec![CommitOutcome::Committed]
    );
    let mut finished = store.finished();
    let started_at = Timestamp::from_millis(5_000);
    let done = Transition {
        header: Some(infinitic::store::WorkflowHeader {
            started_at,
            ..header()
        }),
        state: WorkflowState::Completed(vec![42]),
        ..transition(&id, 1, 1, Vec::new(), None)
    };
    assert_eq!(
        commit(&store, vec![done]).await,
        vec![CommitOutcome::Committed]
    );
    let waited = Instant::now();
    finished.wait_for(&id, Duration::from_secs(10)).await;
    assert!(waited.elapsed() < Duration::from_secs(5), "announced");
    let stored = store.load(&id, true).await.unwrap().unwrap();
    assert_eq!(stored.header.started_at, started_at);
    assert_eq!(stored.state, WorkflowState::Completed(vec![42]));
}

// ---------------------------------------------------------------------------------------------
// A state store alone (beside a broker): it publishes nothing itself, a relay does.

pub(super) async fn the_outbox_keeps_commit_order_until_cleared(backend: impl StateBackend) {
    let store = backend.open().await;
    assert!(!store.settles_on_commit(), "a relay publishes its outbox");
    let (a, b) = (WorkflowId::new("wf-a"), WorkflowId::new("wf-b"));
    commit(
        &store,
        vec![
            transition(&a, 0, 0, vec![message("service:A", 1)], None),
            transition(&b, 0, 0, vec![message("service:B", 2)], None),
        ],
    )
    .await;
    commit(
        &store,
        vec![transition(&a, 1, 1, vec![message("service:A", 3)], None)],
    )
    .await;
    let entries = store.outbox(10).await.unwrap();
    let payloads: Vec<_> = entries.iter().map(|e| e.message.payload.clone()).collect();
    assert_eq!(payloads, vec![vec![1], vec![2], vec![3]]);
    assert_eq!(entries[1].message, message("service:B", 2));
    assert_eq!(store.outbox(2).await.unwrap(), entries[..2].to_vec());
    store
        .clear_outbox(vec![entries[0].id, entries[2].id])
        .await
        .unwrap();
    assert_eq!(store.outbox(10).await.unwrap(), vec![entries[1].clone()]);
    store.clear_outbox(vec![entries[1].id]).await.unwrap();
    assert_eq!(store.outbox(10).await.unwrap(), Vec::new());
}

// ---------------------------------------------------------------------------------------------

/// Instantiates `checks` for the backend `make::$make`, in module `$module`.
macro_rules! contract {
    ($module:ident, $make:ident, [$($check:ident),* $(,)?]) => {
        mod $module {
            $(#[tokio::test]
            async fn $check() {
                if let Some(backend) = super::make::$make(stringify!($check)).await {
                    super::$check(backend).await
                }
            })*
        }
    };
}

/// The checks every state store passes, plus `$extra` ones of its kind.
macro_rules! every_state_store {
    ($module:ident, $make:ident $(, $extra:ident)* $(,)?) => {
        contract!($module, $make, [
            a_transition_writes_state_history_outbox_and_consumption_together,
            a_stale_version_is_a_conflict_and_writes_nothing,
            a_message_consumed_again_is_a_conflict_and_writes_nothing,
            a_message_consumed_twice_in_one_batch_applies_once,
            creating_an_instance_twice_is_a_conflict,
            creating_without_a_header_is_refused,
            one_batch_mixes_committed_and_conflicting_transitions,
            commits_apply_in_the_order_they_are_submitted,
            two_handles_see_each_other_and_compare_and_set_across_them,
            acknowledged_commits_are_there_after_a_reopen,
            loads_with_or_without_history_and_of_unknown_instances,
            a_pending_instance_takes_its_start_time_and_final_states_are_announced,
            $($extra),*
        ]);
    };
}

every_state_store!(sqlite_full, sqlite_full);
every_state_store!(sqlite_full_before_visible, sqlite_full_before_visible);
every_state_store!(memory, memory);
every_state_store!(
    memory_alone,
    memory_alone,
    the_outbox_keeps_commit_order_until_cleared
);
#[cfg(feature = "postgres")]
every_state_store!(
    postgres,
    postgres,
    the_outbox_keeps_commit_order_until_cleared
);
