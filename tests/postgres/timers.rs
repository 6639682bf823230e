//! Durable timers in PostgreSQL: a timer's row is written by the transition that starts it and
//! deleted by the one that consumes its message (or ends its instance); an overdue timer is
//! published again by the relay's sweep after a grace period, then less and less often; a timer delivered again after
//! its consumed id was forgotten changes nothing; relays claim outbox entries.

use super::pg::{self, Server};
use infinitic::message::{Message, MessageId};
use infinitic::prelude::*;
use infinitic::store::memory::MemoryStore;
use infinitic::store::postgres::{PostgresOptions, PostgresStore};
use infinitic::store::{
    Activity, CommitOutcome, Consumed, DeadLetter, DeliveryId, Outgoing, Received, Settlement,
    StoreError, Transition, WorkflowHeader,
};
use infinitic::{
    CommandId, Generation, HistoryEvent, MethodRun, StateStore, StepOutcome, Timestamp, Transport,
    Worker, WorkerConfig, WorkflowId, WorkflowState,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn header() -> WorkflowHeader {
    WorkflowHeader {
        generation: Generation::FIRST,
        workflow: "Test".into(),
        method: "run".into(),
        input: Vec::new(),
        started_at: Timestamp::from_millis(1),
        parent: None,
    }
}

fn transition(id: &str, version: u64, state: WorkflowState, outbox: Vec<Outgoing>) -> Transition {
    Transition {
        workflow_id: WorkflowId::new(id),
        expected_version: version,
        header: (version == 0).then(header),
        state,
        append: Vec::new(),
        outbox,
        consumed: None,
        dead_letter: None,
        report_to: None,
    }
}

fn timer(workflow: &str, name: &str, due: Timestamp) -> Outgoing {
    Outgoing::new("workflow:Test", workflow, vec![7], due).as_timer(MessageId::new(name))
}

fn count(url: &str, schema: &str, table: &str) -> String {
    Server::try_psql(url, &format!("SELECT count(*) FROM {schema}.{table}")).unwrap()
}

async fn store(url: &str, schema: &str, grace: Duration) -> PostgresStore {
    let options = PostgresOptions {
        timer_grace: grace,
        ..pg::options(schema)
    };
    PostgresStore::connect(url, options).await.unwrap()
}

#[tokio::test]
async fn a_timer_lives_in_the_table_from_the_transition_that_starts_it_to_the_one_that_consumes_it()
{
    let Some(server) = pg::server() else { return };
    // On a database written by schema version 1 and migrated: the migration adds the table.
    let url = super::schema::database_from_fixture(&server, 1);
    let store = store(&url, "infinitic", Duration::from_secs(3600)).await;
    let due = Timestamp::wall_clock() + Duration::from_secs(60);
    let started = transition(
        "t-1",
        0,
        WorkflowState::Running,
        vec![
            timer("t-1", "done:t-1/0/0", due),
            timer("t-1", "done:t-1/0/1", due),
        ],
    );
    assert_eq!(
        store.commit(vec![started]).await.unwrap(),
        vec![CommitOutcome::Committed]
    );
    assert_eq!(count(&url, "infinitic", "timers"), "2");
    // A conflicting transition consuming it changes nothing.
    let mut fired = transition("t-1", 5, WorkflowState::Running, Vec::new());
    fired.consumed = Some(Consumed {
        message: MessageId::new("done:t-1/0/0"),
        delivery: DeliveryId::new(1),
    });
    assert_eq!(
        store.commit(vec![fired.clone()]).await.unwrap(),
        vec![CommitOutcome::Conflict]
    );
    assert_eq!(count(&url, "infinitic", "timers"), "2");
    fired.expected_version = 1;
    assert_eq!(
        store.commit(vec![fired]).await.unwrap(),
        vec![CommitOutcome::Committed]
    );
    let left = Server::try_psql(&url, "SELECT message_id FROM infinitic.timers").unwrap();
    assert_eq!(left, "done:t-1/0/1");
    // The instance ends: its other timer will never be needed.
    let ended = transition("t-1", 2, WorkflowState::Completed(vec![0xc0]), Vec::new());
    store.commit(vec![ended]).await.unwrap();
    assert_eq!(count(&url, "infinitic", "timers"), "0");
}

#[tokio::test]
async fn an_overdue_timer_is_returned_again_after_one_then_two_grace_periods_even_when_parked() {
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("overdue");
    let store = store(&server.url, &schema, Duration::from_millis(400)).await;
    let now = Timestamp::wall_clock();
    let past = Timestamp::from_millis(now.as_millis() - 5_000);
    let future = now + Duration::from_secs(3600);
    let outbox = vec![timer("o-1", "late", past), timer("o-1", "later", future)];
    store
        .commit(vec![transition("o-1", 0, WorkflowState::Running, outbox)])
        .await
        .unwrap();
    let parked = WorkflowState::Parked("boom".into());
    store
        .commit(vec![transition("o-1", 1, parked, Vec::new())])
        .await
        .unwrap();
    let overdue = store.overdue_timers(10).await.unwrap();
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert_eq!(overdue[0].timer, Some(MessageId::new("late")));
    assert_eq!(overdue[0].deliver_at, past);
    assert_eq!(overdue[0].payload, vec![7]);
    assert!(
        store.overdue_timers(10).await.unwrap().is_empty(),
        "claimed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.overdue_timers(10).await.unwrap().len(), 1, "again");
    // Then after twice the grace period (a timer its instance ignores stays until it ends).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        store.overdue_timers(10).await.unwrap().is_empty(),
        "not yet"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.overdue_timers(10).await.unwrap().len(),
        1,
        "backed off"
    );
}

#[tokio::test]
async fn two_relays_on_one_database_read_each_outbox_entry_once() {
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("claims");
    let (a, b) = (server.store(&schema).await, server.store(&schema).await);
    const MESSAGES: usize = 400;
    let transitions = (0..MESSAGES)
        .map(|n| {
            let message = Outgoing::new("t", "k", vec![1], Timestamp::from_millis(1));
            transition(&format!("c-{n}"), 0, WorkflowState::Running, vec![message])
        })
        .collect();
    a.commit(transitions).await.unwrap();
    // Two relays: read a batch, take a moment to publish it, clear it; until the outbox is empty.
    let relay = |store: PostgresStore| async move {
        let mut read = Vec::new();
        loop {
            let entries = store.outbox(25).await.unwrap();
            if entries.is_empty() {
                return read;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
            read.extend(ids.iter().copied());
            store.clear_outbox(ids).await.unwrap();
        }
    };
    let (first, second) = tokio::join!(relay(a.clone()), relay(b));
    assert!(
        !first.is_empty() && !second.is_empty(),
        "both relays worked"
    );
    let total = first.len() + second.len();
    let distinct: BTreeSet<u64> = first.iter().chain(&second).copied().collect();
    assert_eq!(distinct.len(), MESSAGES);
    assert_eq!(total, MESSAGES, "each entry read by one relay only");
    assert!(a.outbox(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_relay_that_died_leaves_its_claims_to_another_after_they_expire() {
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("expire");
    let short = PostgresOptions {
        outbox_claim: Duration::from_millis(300),
        ..pg::options(&schema)
    };
    let a = PostgresStore::connect(&server.url, short.clone())
        .await
        .unwrap();
    let b = PostgresStore::connect(&server.url, short).await.unwrap();
    let message = Outgoing::new("t", "k", vec![1], Timestamp::from_millis(1));
    a.commit(vec![transition(
        "e-1",
        0,
        WorkflowState::Running,
        vec![message],
    )])
    .await
    .unwrap();
    assert_eq!(a.outbox(10).await.unwrap().len(), 1);
    // `a` dies before clearing.
    assert!(b.outbox(10).await.unwrap().is_empty(), "claimed by a");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.outbox(10).await.unwrap().len(), 1, "the claim expired");
}

#[tokio::test]
async fn the_store_clock_reads_the_database_time() {
    let Some(server) = pg::server() else { return };
    let store = server.store(&pg::unique("clock")).await;
    let clock = store.clock();
    let database: u64 = server
        .psql("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
        .parse()
        .unwrap();
    let ours = clock.now().as_millis();
    // psql started before `ours` was read, and it takes a while.
    assert!(
        ours + 50 >= database && ours < database + 2_000,
        "{ours} vs {database}"
    );
    // The test server runs on this machine, on this clock: the measured offset is about 0
    // (a measure that counted opening a connection was 27-30 ms off).
    let wall = Timestamp::wall_clock().as_millis();
    let read = clock.now().as_millis();
    assert!(
        read.abs_diff(wall) <= 5,
        "the store clock reads {read}, the wall clock {wall}"
    );
}

// ---- The runtime: lost wake-ups, late duplicates -------------------------------------------

#[workflow]
pub trait Naps {
    /// Sleeps `first` ms, then `second` ms; answers the time after the first.
    async fn run(&self, first: u64, second: u64) -> u64;
}

#[derive(Default)]
pub struct NapsImpl;

#[workflow]
impl Naps for NapsImpl {
    async fn run(&self, first: u64, second: u64) -> u64 {
        workflow::sleep(Duration::from_millis(first)).await;
        let woke = Timestamp::from(workflow::now()).as_millis();
        workflow::sleep(Duration::from_millis(second)).await;
        woke
    }
}

/// The in-memory transport, counting what is published, and losing every delayed message
/// published while `lose` is set: a broker that dropped its timers.
#[derive(Clone)]
struct Lossy {
    inner: MemoryStore,
    lose: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
    published: Arc<AtomicUsize>,
}

impl Lossy {
    fn new(inner: MemoryStore, lose: bool) -> Self {
        Self {
            inner,
            lose: Arc::new(AtomicBool::new(lose)),
            lost: Arc::default(),
            published: Arc::default(),
        }
    }
}

impl Transport for Lossy {
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), StoreError> {
        let now = Timestamp::wall_clock();
        let lose = self.lose.load(Ordering::SeqCst);
        let (lost, kept): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|m| lose && m.deliver_at > now);
        self.lost.fetch_add(lost.len(), Ordering::SeqCst);
        self.published.fetch_add(kept.len(), Ordering::SeqCst);
        self.inner.publish(kept).await
    }
    async fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Received, StoreError> {
        self.inner.receive(topics, max, lease).await
    }
    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), StoreError> {
        self.inner.settle(settlements).await
    }
    fn activity(&self) -> Activity {
        self.inner.activity()
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(limit).await
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_millis(20),
        ..WorkerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_the_broker_lost_is_published_again_from_the_table_and_fires_once() {
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("lost");
    let state = store(&server.url, &schema, Duration::from_secs(1)).await;
    let transport = Lossy::new(MemoryStore::new(), true);
    let worker = Worker::with_backends(transport.clone(), state.clone())
        .workflow(NapsImpl::default)
        .config(WorkerConfig {
            clock: state.clock(),
            ..config()
        })
        .start();
    let client = Client::with_store_writes(transport.clone(), state.clone());
    let started = Instant::now();
    let handle = client
        .dispatch_with_id("lost-1", NapsStub.run(300, 300))
        .await
        .unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(20), handle.result())
        .await
        .expect("the lost timers fired")
        .unwrap();
    worker.shutdown().await;
    // The first wake-up is lost (the second is due by the time the first fired, so it is not
    // delayed any more).
    assert!(
        transport.lost.load(Ordering::SeqCst) >= 1,
        "a wake-up was lost"
    );
    // Fired by the sweep: after its due time plus the grace period, not before.
    assert!(
        started.elapsed() >= Duration::from_millis(1_300),
        "{:?}",
        started.elapsed()
    );
    let stored = state
        .load(&WorkflowId::new("lost-1"), true)
        .await
        .unwrap()
        .unwrap();
    let completions = stored
        .history
        .iter()
        .filter(|e| matches!(e, HistoryEvent::Completed(_)))
        .count();
    assert_eq!(completions, 2, "{:?}", stored.history);
    assert!(woke > 0);
    assert_eq!(count(&server.url, &schema, "timers"), "0");
    assert!(transport.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_delivered_again_after_its_consumed_id_was_forgotten_is_acked_and_changes_nothing()
{
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("late");
    let state = server.store(&schema).await;
    let transport = MemoryStore::new();
    let worker = Worker::with_backends(transport.clone(), state.clone())
        .workflow(NapsImpl::default)
        .config(config())
        .start();
    let client = Client::with_store_writes(transport.clone(), state.clone());
    let id = WorkflowId::new("late-1");
    client
        .dispatch_with_id("late-1", NapsStub.run(50, 3_600_000))
        .await
        .unwrap();
    // Waits for the first timer to fire.
    let deadline = Instant::now() + Duration::from_secs(10);
    let fired = loop {
        let stored = state.load(&id, true).await.unwrap().unwrap();
        if stored
            .history
            .iter()
            .any(|e| matches!(e, HistoryEvent::Completed(_)))
        {
            break stored;
        }
        assert!(Instant::now() < deadline, "the first timer fired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Seven days later: the consumed ids are forgotten, and the broker delivers it again.
    server.psql(&format!("DELETE FROM {schema}.consumed"));
    let command = CommandId::new(id.clone(), MethodRun(0), 0);
    let again = Message::command_completed(
        command,
        StepOutcome::Completed(vec![0xc0]),
        Timestamp::from_millis(1),
    );
    let message = Outgoing::new(
        "workflow:Naps",
        "late-1",
        again.encode(),
        Timestamp::from_millis(1),
    );
    transport.publish(vec![message]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.shutdown().await;
    let topics = ["workflow:Naps".to_string()];
    let left = transport
        .receive(&topics, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(left.deliveries.is_empty(), "acked: {:?}", left.deliveries);
    assert!(
        transport.dead_letters(10).await.unwrap().is_empty(),
        "not dead-lettered"
    );
    let stored = state.load(&id, true).await.unwrap().unwrap();
    assert_eq!(stored.version, fired.version, "nothing applied");
    assert_eq!(stored.history, fired.history);
    // The second timer is still recorded.
    assert_eq!(count(&server.url, &schema, "timers"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_database_publish_each_message_once() {
    let Some(server) = pg::server() else { return };
    let schema = pg::unique("relays");
    let broker = MemoryStore::new();
    let mut workers = Vec::new();
    let mut transports = Vec::new();
    for _ in 0..2 {
        let state = server.store(&schema).await;
        let transport = Lossy::new(broker.clone(), false);
        workers.push(
            Worker::with_backends(transport.clone(), state)
                .workflow(NapsImpl::default)
                .config(config())
                .start(),
        );
        transports.push(transport);
    }
    let state = server.store(&schema).await;
    let client = Client::with_store_writes(transports[0].clone(), state.clone());
    const WORKFLOWS: usize = 100;
    let mut handles = Vec::new();
    for n in 0..WORKFLOWS {
        let id = format!("relayed-{n}");
        handles.push(
            client
                .dispatch_with_id(id.as_str(), NapsStub.run(10, 10))
                .await
                .unwrap(),
        );
    }
    for handle in handles {
        tokio::time::timeout(Duration::from_secs(30), handle.result())
            .await
            .expect("finishes")
            .unwrap();
    }
    for worker in workers {
        worker.shutdown().await;
    }
    // Each workflow's start message and its two timers, each published by one relay.
    let published: usize = transports
        .iter()
        .map(|t| t.published.load(Ordering::SeqCst))
        .sum();
    let each: Vec<usize> = transports
        .iter()
        .map(|t| t.published.load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        published,
        WORKFLOWS * 3,
        "published by each relay: {each:?}"
    );
}
