//! The contract of a transport, run against the SQLite queue, the in-memory transport and (with
//! the `pulsar` feature) a real Apache Pulsar broker started by `scripts/pulsar.sh`:
//! delivery, delayed delivery, redelivery of what is not settled within its lease, retries at
//! a time, dead letters with their reason, bad bytes on a topic (dead-lettered by a worker that
//! goes on), ownership (two consumers of one key never both commit a transition for it), and a
//! workflow with a service call, a retry and a timer run to completion by workers over it.
//!
//! Pulsar needs `INFINITIC_PULSAR_URL` (and, for the authentication tests,
//! `INFINITIC_PULSAR_AUTH_URL` and `INFINITIC_PULSAR_AUTH_TOKEN`): `scripts/test-pulsar.sh`
//! starts the brokers and runs this file. Without them the Pulsar tests print that they are
//! skipped, unless `CI=true`, where they fail.

use infinitic::message::MessageId;
use infinitic::prelude::*;
use infinitic::store::memory::MemoryStore;
use infinitic::store::memory_state::MemoryStateStore;
use infinitic::store::sqlite::{Durability, OpenMode};
use infinitic::store::{
    CommitOutcome, Consumed, Delivery, Outgoing, Settlement, Transition, WorkflowHeader,
};
use infinitic::{
    Client, Completion, HistoryEvent, MethodRun, RetryPolicy, SqliteStore, StateStore, StepOutcome,
    Timestamp, Transport, Worker, WorkerConfig, WorkflowId, WorkflowState,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "workflow:Contract";
const OTHER: &str = "service:Contract";
const LEASE: Duration = Duration::from_secs(30);

/// A transport under test, and the state store its consumers commit to.
trait Backend {
    /// The transport.
    type T: Transport + Clone;
    /// The state store that arbitrates transitions (compare-and-set).
    type S: StateStore + Clone;
    /// A new handle: a second consumer of the same topics when called again.
    async fn handle(&self) -> Self::T;
    /// The state store consumers of `transport` commit to.
    fn state(&self, transport: &Self::T) -> Self::S;
    /// Whether the transport routes one key to one consumer at a time (Key_Shared).
    fn keyed_routing(&self) -> bool {
        false
    }
    /// How long to watch for a message that must not come.
    fn quiet(&self) -> Duration {
        Duration::from_millis(300)
    }
}

/// The SQLite store on a file of its own: transport and state store in one.
struct Sqlite(PathBuf);

impl Sqlite {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "infinitic-transport-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Backend for Sqlite {
    type T = SqliteStore;
    type S = SqliteStore;
    async fn handle(&self) -> SqliteStore {
        SqliteStore::open_with(
            self.0.join("store.db"),
            OpenMode::CreateIfMissing,
            Durability::Full,
        )
        .unwrap()
    }
    fn state(&self, transport: &SqliteStore) -> SqliteStore {
        transport.clone()
    }
}

/// The in-memory store: handles share its contents.
struct Memory(MemoryStore);

impl Memory {
    fn new(_name: &str) -> Self {
        Self(MemoryStore::new())
    }
}

impl Backend for Memory {
    type T = MemoryStore;
    type S = MemoryStore;
    async fn handle(&self) -> MemoryStore {
        self.0.clone()
    }
    fn state(&self, transport: &MemoryStore) -> MemoryStore {
        transport.clone()
    }
}

fn header(workflow: &str) -> WorkflowHeader {
    WorkflowHeader {
        generation: infinitic::Generation::FIRST,
        workflow: workflow.into(),
        method: "run".into(),
        input: Vec::new(),
        started_at: Timestamp::from_millis(1_000),
        parent: None,
    }
}

fn now() -> Timestamp {
    Timestamp::wall_clock()
}

fn message(topic: &str, key: &str, payload: &[u8]) -> Outgoing {
    Outgoing::new(topic, key, payload.to_vec(), Timestamp::from_millis(0))
}

fn topics(names: &[&str]) -> Vec<String> {
    names.iter().map(|t| t.to_string()).collect()
}

/// Receives until `count` deliveries came (panics after `within`).
async fn receive_n<T: Transport>(
    t: &T,
    names: &[&str],
    count: usize,
    lease: Duration,
    within: Duration,
) -> Vec<Delivery> {
    let names = topics(names);
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut activity = t.activity();
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "expected {count} deliveries on {names:?} within {within:?}, got {}: {got:?}",
            got.len()
        );
        let received = t.receive(&names, count - got.len(), lease).await.unwrap();
        if received.deliveries.is_empty() {
            activity.wait(Duration::from_millis(20)).await;
        }
        got.extend(received.deliveries);
    }
    got
}

/// Checks that nothing is delivered on `names` for `quiet`.
async fn nothing_for<T: Transport>(t: &T, names: &[&str], quiet: Duration) {
    let names = topics(names);
    let deadline = Instant::now() + quiet;
    while Instant::now() < deadline {
        let received = t.receive(&names, 10, LEASE).await.unwrap();
        assert_eq!(received.deliveries, Vec::new(), "nothing more is delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ack(d: &Delivery) -> Settlement {
    Settlement::Ack {
        delivery: d.id,
        publish: Vec::new(),
    }
}

async fn delivery_brings_topic_key_payload_once(b: impl Backend) {
    let t = b.handle().await;
    t.publish(vec![
        message(TOPIC, "k1", b"one"),
        message(OTHER, "k2", b"two"),
        message(TOPIC, "k1", b"three"),
    ])
    .await
    .unwrap();
    let got = receive_n(&t, &[TOPIC, OTHER], 3, LEASE, Duration::from_secs(20)).await;
    let seen: BTreeSet<(String, String, Vec<u8>, u32)> = got
        .iter()
        .map(|d| (d.topic.clone(), d.key.clone(), d.payload.clone(), d.attempt))
        .collect();
    let expected: BTreeSet<_> = [
        (TOPIC, "k1", &b"one"[..]),
        (OTHER, "k2", &b"two"[..]),
        (TOPIC, "k1", &b"three"[..]),
    ]
    .into_iter()
    .map(|(t, k, p)| (t.to_string(), k.to_string(), p.to_vec(), 1))
    .collect();
    assert_eq!(seen, expected);
    // One key's messages come in their order.
    let on_k1: Vec<&[u8]> = got
        .iter()
        .filter(|d| d.key == "k1")
        .map(|d| &d.payload[..])
        .collect();
    assert_eq!(on_k1, vec![&b"one"[..], &b"three"[..]]);
    t.settle(got.iter().map(ack).collect()).await.unwrap();
    nothing_for(&t, &[TOPIC, OTHER], b.quiet()).await;
}

async fn a_delayed_message_comes_when_due_not_before(b: impl Backend) {
    let t = b.handle().await;
    let names = [TOPIC];
    // Subscribe first, so the time measured is the delay's, not the subscription's.
    let _ = t.receive(&topics(&names), 1, LEASE).await.unwrap();
    let delay = Duration::from_millis(1500);
    let due = now() + delay;
    let published = Instant::now();
    t.publish(vec![
        Outgoing::new(TOPIC, "late", b"late".to_vec(), due),
        message(TOPIC, "now", b"now"),
    ])
    .await
    .unwrap();
    let first = receive_n(&t, &names, 1, LEASE, Duration::from_secs(10)).await;
    assert_eq!(first[0].payload, b"now");
    t.settle(vec![ack(&first[0])]).await.unwrap();
    let second = receive_n(&t, &names, 1, LEASE, Duration::from_secs(10)).await;
    let waited = published.elapsed();
    assert_eq!(second[0].payload, b"late");
    assert!(
        waited >= delay - Duration::from_millis(50),
        "delivered after {waited:?}, due after {delay:?}"
    );
    assert!(now() >= due, "delivered before its time");
    t.settle(vec![ack(&second[0])]).await.unwrap();
    nothing_for(&t, &names, b.quiet()).await;
}

async fn an_unsettled_message_comes_back_after_its_lease(b: impl Backend) {
    let t = b.handle().await;
    t.publish(vec![message(TOPIC, "k", b"again")])
        .await
        .unwrap();
    let lease = Duration::from_millis(400);
    let first = receive_n(&t, &[TOPIC], 1, lease, Duration::from_secs(20)).await;
    let leased_at = Instant::now();
    assert_eq!(first[0].attempt, 1);
    // Not settled: it is not delivered again while leased, then comes back.
    let again = receive_n(&t, &[TOPIC], 1, LEASE, Duration::from_secs(10)).await;
    let after = leased_at.elapsed();
    assert!(
        after >= lease - Duration::from_millis(50),
        "redelivered after {after:?}"
    );
    assert_eq!(again[0].payload, b"again");
    assert_eq!(again[0].attempt, 2);
    t.settle(vec![ack(&again[0])]).await.unwrap();
    nothing_for(&t, &[TOPIC], b.quiet()).await;
}

async fn retry_delivers_again_at_its_time(b: impl Backend) {
    let t = b.handle().await;
    t.publish(vec![message(TOPIC, "k", b"retry")])
        .await
        .unwrap();
    let first = receive_n(&t, &[TOPIC], 1, LEASE, Duration::from_secs(20)).await;
    let delay = Duration::from_millis(800);
    let settled = Instant::now();
    t.settle(vec![Settlement::Retry {
        delivery: first[0].id,
        at: now() + delay,
    }])
    .await
    .unwrap();
    let again = receive_n(&t, &[TOPIC], 1, LEASE, Duration::from_secs(10)).await;
    assert!(settled.elapsed() >= delay - Duration::from_millis(50));
    assert_eq!(
        (&again[0].payload[..], again[0].attempt),
        (&b"retry"[..], 2)
    );
    // A retry due now comes back at once.
    t.settle(vec![Settlement::Retry {
        delivery: again[0].id,
        at: now(),
    }])
    .await
    .unwrap();
    let third = receive_n(&t, &[TOPIC], 1, LEASE, Duration::from_secs(5)).await;
    assert_eq!(
        (&third[0].payload[..], third[0].attempt),
        (&b"retry"[..], 3)
    );
    t.settle(vec![ack(&third[0])]).await.unwrap();
    nothing_for(&t, &[TOPIC], b.quiet()).await;
}

async fn a_dead_letter_keeps_topic_key_payload_and_reason(b: impl Backend) {
    let t = b.handle().await;
    t.publish(vec![message(TOPIC, "k-dead", b"\xB7bad")])
        .await
        .unwrap();
    let got = receive_n(&t, &[TOPIC], 1, LEASE, Duration::from_secs(20)).await;
    t.settle(vec![Settlement::DeadLetter {
        delivery: got[0].id,
        reason: "cannot decode: bad marker".into(),
        publish: vec![message(OTHER, "told", b"told")],
    }])
    .await
    .unwrap();
    let letters = t.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].topic, TOPIC);
    assert_eq!(letters[0].key, "k-dead");
    assert_eq!(letters[0].payload, b"\xB7bad");
    assert_eq!(letters[0].reason, "cannot decode: bad marker");
    // What the dead letter published is delivered; the message itself is not.
    let told = receive_n(&t, &[OTHER], 1, LEASE, Duration::from_secs(10)).await;
    assert_eq!(told[0].payload, b"told");
    t.settle(vec![ack(&told[0])]).await.unwrap();
    nothing_for(&t, &[TOPIC, OTHER], b.quiet()).await;
}

/// Two consumers take messages of a few keys; each message becomes one transition of its
/// key's instance, committed compare-and-set on the instance's version and recording the
/// message consumed. No version of a key is committed twice, every message is applied once,
/// and, on a transport with keyed routing, each key's transitions all come from one consumer.
async fn two_consumers_of_one_key_never_both_commit_a_transition(b: impl Backend) {
    const KEYS: usize = 8;
    const PER_KEY: usize = 6;
    let consumers = [b.handle().await, b.handle().await];
    // Both subscribe before anything is published, so keys are divided from the start.
    for c in &consumers {
        let _ = c.receive(&topics(&[TOPIC]), 1, LEASE).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut messages = Vec::new();
    for n in 0..PER_KEY {
        for k in 0..KEYS {
            messages.push(message(
                TOPIC,
                &format!("key-{k}"),
                format!("key-{k}/{n}").as_bytes(),
            ));
        }
    }
    consumers[0].publish(messages).await.unwrap();
    // (key, version) -> consumer that committed it.
    let log: Arc<Mutex<BTreeMap<(String, u64), usize>>> = Arc::default();
    let applied: Arc<Mutex<BTreeSet<Vec<u8>>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut tasks = Vec::new();
    for (who, transport) in consumers.iter().enumerate() {
        let state = b.state(transport);
        let transport = transport.clone();
        let (log, applied) = (Arc::clone(&log), Arc::clone(&applied));
        tasks.push(async move {
            while applied.lock().unwrap().len() < KEYS * PER_KEY && Instant::now() < deadline {
                let received = transport
                    .receive(&topics(&[TOPIC]), 4, LEASE)
                    .await
                    .unwrap();
                if received.deliveries.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                for d in received.deliveries {
                    if applied.lock().unwrap().contains(&d.payload) {
                        // A duplicate: already applied (the state store would say so too).
                        if !state.settles_on_commit() {
                            transport.settle(vec![ack(&d)]).await.unwrap();
                        }
                        continue;
                    }
                    let id = WorkflowId::new(d.key.clone());
                    let version = state
                        .load(&id, false)
                        .await
                        .unwrap()
                        .map_or(0, |w| w.version);
                    let transition = Transition {
                        workflow_id: id,
                        expected_version: version,
                        header: (version == 0).then(|| header("Contract")),
                        state: WorkflowState::Running,
                        append: vec![HistoryEvent::Completed(Completion {
                            run: MethodRun(0),
                            position: version as u32,
                            at: Timestamp::from_millis(2_000),
                            outcome: StepOutcome::Completed(d.payload.clone()),
                        })],
                        outbox: Vec::new(),
                        consumed: Some(Consumed {
                            message: MessageId::new(String::from_utf8_lossy(&d.payload)),
                            delivery: d.id,
                        }),
                        dead_letter: None,
                        report_to: None,
                    };
                    let outcome = state.commit(vec![transition]).await.unwrap();
                    match outcome[0] {
                        CommitOutcome::Committed => {
                            let first = log
                                .lock()
                                .unwrap()
                                .insert((d.key.clone(), version + 1), who)
                                .is_none();
                            assert!(
                                first,
                                "version {} of {} committed twice",
                                version + 1,
                                d.key
                            );
                            applied.lock().unwrap().insert(d.payload.clone());
                            if !state.settles_on_commit() {
                                transport.settle(vec![ack(&d)]).await.unwrap();
                            }
                        }
                        CommitOutcome::Conflict => {
                            // Another consumer moved the instance on: try again soon.
                            if !state.settles_on_commit()
                                || !applied.lock().unwrap().contains(&d.payload)
                            {
                                transport
                                    .settle(vec![Settlement::Retry {
                                        delivery: d.id,
                                        at: now(),
                                    }])
                                    .await
                                    .unwrap();
                            }
                        }
                    }
                }
            }
        });
    }
    let [a, c] = <[_; 2]>::try_from(tasks).ok().unwrap();
    tokio::join!(a, c);
    let log = log.lock().unwrap().clone();
    assert_eq!(
        applied.lock().unwrap().len(),
        KEYS * PER_KEY,
        "every message applied once"
    );
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let versions: Vec<u64> = log
            .keys()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(versions, (1..=PER_KEY as u64).collect::<Vec<_>>(), "{key}");
    }
    let owners: BTreeMap<&str, BTreeSet<usize>> =
        log.iter()
            .fold(BTreeMap::new(), |mut owners, ((key, _), who)| {
                owners.entry(key.as_str()).or_default().insert(*who);
                owners
            });
    if b.keyed_routing() {
        for (key, who) in &owners {
            assert_eq!(who.len(), 1, "{key} was handled by consumers {who:?}");
        }
        let used: BTreeSet<usize> = owners.values().flatten().copied().collect();
        assert_eq!(used.len(), 2, "both consumers own keys: {owners:?}");
    }
}

// ---- Workers over the transport --------------------------------------------------------

#[service]
pub trait Greeter {
    /// Fails on its first call, then greets.
    async fn greet(&self, name: String) -> Result<String, String>;
}

#[derive(Clone, Default)]
struct GreeterImpl {
    calls: Arc<AtomicU32>,
}

impl Greeter for GreeterImpl {
    async fn greet(&self, name: String) -> Result<String, String> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Err("not yet".into())
        } else {
            Ok(format!("hello {name}"))
        }
    }
}

#[workflow]
pub trait Hello {
    async fn run(&self, name: String) -> String;
}

#[derive(Default)]
pub struct HelloImpl {
    greeter: GreeterStub,
}

#[workflow]
impl Hello for HelloImpl {
    async fn run(&self, name: String) -> String {
        workflow::sleep(Duration::from_millis(500)).await;
        format!("{:?}", self.greeter.greet(name).await)
    }
}

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(200),
            multiplier: 2.0,
            max_delay: Duration::from_secs(1),
            jitter: 0.0,
        },
        task_timeout: Duration::from_secs(5),
        task_lease_margin: Duration::from_secs(5),
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

/// Garbage on a workflow topic is dead-lettered with a reason by the worker, which goes on:
/// a workflow started after it runs its timer, its service call and the call's retry to
/// completion. Workers run over the transport with a separate state store.
async fn workers_dead_letter_bad_bytes_and_run_a_workflow_to_completion(b: impl Backend) {
    let transport = b.handle().await;
    let state = MemoryStateStore::new();
    let greeter = GreeterImpl::default();
    let worker = Worker::with_backends(transport.clone(), state.clone())
        .service(GreeterDispatcher::new(greeter.clone()))
        .workflow(HelloImpl::default)
        .config(worker_config())
        .start();
    transport
        .publish(vec![message(
            "workflow:Hello",
            "junk",
            b"\xC1 not an envelope",
        )])
        .await
        .unwrap();
    let client = Client::with_backends(transport.clone(), state.clone());
    let started = Instant::now();
    let handle = client
        .dispatch_with_id("hello-1", HelloStub.run("pulsar".into()))
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(40), handle.result())
        .await
        .expect("finishes")
        .expect("completes");
    assert_eq!(result, "Ok(\"hello pulsar\")");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the timer waited"
    );
    assert_eq!(
        greeter.calls.load(Ordering::SeqCst),
        2,
        "failed once, retried once"
    );
    let mut letters = Vec::new();
    for _ in 0..100 {
        letters = transport.dead_letters(10).await.unwrap();
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].topic, "workflow:Hello");
    assert_eq!(letters[0].payload, b"\xC1 not an envelope");
    assert!(!letters[0].reason.is_empty(), "a readable reason");
    println!("dead letter reason: {}", letters[0].reason);
}

/// Runs each check on every transport: SQLite, in memory, and Pulsar with the feature.
macro_rules! on_every_transport {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                super::$check(super::Sqlite::new(stringify!($check))).await
            })*
        }
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                super::$check(super::Memory::new(stringify!($check))).await
            })*
        }
        #[cfg(feature = "pulsar")]
        mod pulsar {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(backend) = super::on_pulsar::Pulsar::new(stringify!($check)) else {
                    return;
                };
                super::$check(backend).await
            })*
        }
    };
}

on_every_transport!(
    delivery_brings_topic_key_payload_once,
    a_delayed_message_comes_when_due_not_before,
    an_unsettled_message_comes_back_after_its_lease,
    retry_delivers_again_at_its_time,
    a_dead_letter_keeps_topic_key_payload_and_reason,
    two_consumers_of_one_key_never_both_commit_a_transition,
    workers_dead_letter_bad_bytes_and_run_a_workflow_to_completion,
);

/// The Pulsar backend, and what only a broker has: authentication, startup errors, the
/// message size limit, acknowledgements flushed on close.
#[cfg(feature = "pulsar")]
mod on_pulsar {
    use super::{message, receive_n, topics, Backend, LEASE, TOPIC};
    use infinitic::store::memory_state::MemoryStateStore;
    use infinitic::store::pulsar::{PulsarOptions, PulsarTransport};
    use infinitic::store::{Settlement, StoreError};
    use infinitic::Transport;
    use std::time::{Duration, Instant};

    /// The broker's URL, or `None` (skipped) when no broker was started; under `CI=true` a
    /// missing broker fails the test.
    pub(super) fn env(name: &str) -> Option<String> {
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => Some(value),
            _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
                "{name} is not set under CI=true: start a broker with `scripts/pulsar.sh start` \
                 (and `start --auth`) and source its env file, or run scripts/test-pulsar.sh"
            ),
            _ => {
                eprintln!(
                    "skipped: {name} is not set (run scripts/test-pulsar.sh, or \
                     `scripts/pulsar.sh start` and source the env file it prints)"
                );
                None
            }
        }
    }

    /// Options on fresh topics of their own (topics outlive a test on the broker).
    pub(super) fn fresh(url: &str, test: &str) -> PulsarOptions {
        let unique = format!("t{}", uuid_like());
        let _ = test;
        PulsarOptions::new(url).with_topic_prefix(unique)
    }

    fn uuid_like() -> String {
        use std::time::{SystemTime, UNIX_EPOCH};
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{nanos:x}{}{n}", std::process::id())
    }

    pub(super) struct Pulsar {
        options: PulsarOptions,
        state: MemoryStateStore,
    }

    impl Pulsar {
        pub(super) fn new(test: &str) -> Option<Self> {
            let url = env("INFINITIC_PULSAR_URL")?;
            Some(Self {
                options: fresh(&url, test),
                state: MemoryStateStore::new(),
            })
        }
    }

    impl Backend for Pulsar {
        type T = PulsarTransport;
        type S = MemoryStateStore;
        async fn handle(&self) -> PulsarTransport {
            PulsarTransport::connect(self.options.clone())
                .await
                .unwrap()
        }
        fn state(&self, _: &PulsarTransport) -> MemoryStateStore {
            self.state.clone()
        }
        fn keyed_routing(&self) -> bool {
            true
        }
        fn quiet(&self) -> Duration {
            Duration::from_millis(700)
        }
    }

    #[tokio::test]
    async fn the_right_token_is_accepted() {
        let Some(url) = env("INFINITIC_PULSAR_AUTH_URL") else {
            return;
        };
        let Some(token) = env("INFINITIC_PULSAR_AUTH_TOKEN") else {
            return;
        };
        let t = PulsarTransport::connect(fresh(&url, "token").with_token(token))
            .await
            .expect("the token is accepted");
        t.publish(vec![message(TOPIC, "k", b"authenticated")])
            .await
            .unwrap();
        let got = receive_n(&t, &[TOPIC], 1, LEASE, Duration::from_secs(20)).await;
        assert_eq!(got[0].payload, b"authenticated");
        t.close().await;
    }

    async fn refused_quickly(options: PulsarOptions, expect: &str) {
        let started = Instant::now();
        let error = PulsarTransport::connect(options.with_startup_timeout(Duration::from_secs(5)))
            .await
            .expect_err("refused");
        let took = started.elapsed();
        println!("{took:?}: {error}");
        assert!(matches!(error, StoreError::Broker(_)), "{error:?}");
        assert!(!error.is_transient());
        assert!(
            error.to_string().contains(expect),
            "the error says `{expect}`: {error}"
        );
        assert!(took < Duration::from_secs(7), "took {took:?}");
    }

    #[tokio::test]
    async fn a_wrong_token_is_a_clear_error_not_a_hang() {
        let Some(url) = env("INFINITIC_PULSAR_AUTH_URL") else {
            return;
        };
        let wrong = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.wrong-signature";
        refused_quickly(
            fresh(&url, "wrong").with_token(wrong),
            "the token was refused",
        )
        .await;
    }

    #[tokio::test]
    async fn no_token_on_an_authenticating_broker_is_a_clear_error() {
        let Some(url) = env("INFINITIC_PULSAR_AUTH_URL") else {
            return;
        };
        refused_quickly(fresh(&url, "none"), "may require authentication").await;
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_a_clear_error_within_the_startup_timeout() {
        // Port 9 on 127.0.0.1 (discard): nothing listens there.
        refused_quickly(PulsarOptions::new("pulsar://127.0.0.1:9"), "127.0.0.1:9").await;
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_before_anything_is_published() {
        let Some(url) = env("INFINITIC_PULSAR_URL") else {
            return;
        };
        let t = PulsarTransport::connect(fresh(&url, "oversized"))
            .await
            .unwrap();
        let limit = t.max_message_bytes().expect("a broker has a limit");
        assert!(
            limit < 5 * 1024 * 1024 && limit > 4 * 1024 * 1024,
            "{limit}"
        );
        let huge = vec![7u8; limit + 1];
        let error = t
            .publish(vec![
                message(TOPIC, "small", b"small"),
                super::Outgoing::new(TOPIC, "huge", huge, super::Timestamp::from_millis(0)),
            ])
            .await
            .expect_err("refused");
        assert!(
            matches!(&error, StoreError::TooLarge { size, .. } if *size == limit + 1 + 4),
            "{error:?}"
        );
        assert!(!error.is_transient(), "never retried");
        println!("{error}");
        // Nothing of that publish went out: the small message is not delivered either.
        let names = topics(&[TOPIC]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let got = t.receive(&names, 10, LEASE).await.unwrap();
            assert_eq!(got.deliveries, Vec::new());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // At the limit it goes through.
        let fits = vec![7u8; limit - 4];
        t.publish(vec![super::Outgoing::new(
            TOPIC,
            "fits",
            fits,
            super::Timestamp::from_millis(0),
        )])
        .await
        .unwrap();
        let got = receive_n(&t, &[TOPIC], 1, LEASE, Duration::from_secs(20)).await;
        assert_eq!(got[0].payload.len(), limit - 4);
        t.close().await;
    }

    #[tokio::test]
    async fn acknowledgements_are_flushed_when_the_transport_closes() {
        let Some(url) = env("INFINITIC_PULSAR_URL") else {
            return;
        };
        let options = fresh(&url, "flush");
        let t = PulsarTransport::connect(options.clone()).await.unwrap();
        let messages = (0..50u8)
            .map(|n| message(TOPIC, &format!("k{n}"), &[n]))
            .collect();
        t.publish(messages).await.unwrap();
        let got = receive_n(&t, &[TOPIC], 50, LEASE, Duration::from_secs(20)).await;
        t.settle(got.iter().map(super::ack).collect())
            .await
            .unwrap();
        t.close().await;
        drop(t);
        // A new consumer of the same subscription gets nothing: every ack reached the broker.
        let again = PulsarTransport::connect(options).await.unwrap();
        let names = topics(&[TOPIC]);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let got = again.receive(&names, 100, LEASE).await.unwrap();
            assert_eq!(
                got.deliveries.len(),
                0,
                "redelivered after close: {:?}",
                got.deliveries
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        again.close().await;
    }

    #[tokio::test]
    async fn a_closed_transport_refuses_work() {
        let Some(url) = env("INFINITIC_PULSAR_URL") else {
            return;
        };
        let t = PulsarTransport::connect(fresh(&url, "closed"))
            .await
            .unwrap();
        t.close().await;
        let error = t
            .publish(vec![message(TOPIC, "k", b"x")])
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::Closed));
        let _ = Settlement::Retry {
            delivery: infinitic::store::DeliveryId::new(1),
            at: super::now(),
        };
    }
}
