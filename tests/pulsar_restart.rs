//! Workers over Pulsar survive a broker crash: while 50 workflows (service calls and a 2 s
//! durable timer each) run on two workers, the broker is SIGKILLed and restarted on the same
//! data (issue 11: "reconnects, and a consumer whose stream ends is recreated"). Every
//! workflow completes with the right result, every step is applied once, no timer fires
//! early, a client over the broker that waited for results across the crash gets them
//! (reported after the restart), and messages published after the restart (workflows started while the broker was
//! down, and after it came back) are delivered.
//!
//! The test starts a broker of its own with `scripts/pulsar.sh`, in
//! `$INFINITIC_PULSAR_RUN/restart`, so the broker the other Pulsar tests share is never
//! killed. It runs when `INFINITIC_PULSAR_RUN` is set (`scripts/test-pulsar.sh` sets it);
//! without it the test prints that it is skipped, unless `CI=true`, where it fails. By hand:
//!
//! ```text
//! INFINITIC_PULSAR_RUN=/tmp/ipr cargo test --features pulsar --test pulsar_restart -- --nocapture
//! ```
#![cfg(feature = "pulsar")]

use infinitic::prelude::*;
use infinitic::store::memory_state::MemoryStateStore;
use infinitic::store::pulsar::{PulsarOptions, PulsarTransport};
use infinitic::store::{
    Activity, CommitOutcome, DeadLetter, Finished, OutboxEntry, Outgoing, Pending, Received,
    Settlement, StoreError, StoredWorkflow, Transition,
};
use infinitic::{
    Client, Command, HistoryEvent, RetryPolicy, StateStore, Transport, Worker, WorkerConfig,
    WorkflowId,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

const BEFORE_KILL: u64 = 50;
const WHILE_DOWN: u64 = 10;
const AFTER_RESTART: u64 = 10;
const TIMER: Duration = Duration::from_secs(2);
const ALL_DONE_WITHIN: Duration = Duration::from_secs(120);

// ---- The workflow ----------------------------------------------------------------------

#[service]
pub trait Steps {
    /// `x + y`.
    async fn add(&self, x: u64, y: u64) -> Result<u64, String>;
}

#[derive(Clone, Default)]
struct StepsImpl {
    calls: Arc<AtomicU64>,
}

impl Steps for StepsImpl {
    async fn add(&self, x: u64, y: u64) -> Result<u64, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(x + y)
    }
}

#[workflow]
pub trait Journey {
    /// `n + 111`, in three service calls around a durable timer.
    async fn run(&self, n: u64) -> Result<u64, String>;
}

#[derive(Default)]
pub struct JourneyImpl {
    steps: StepsStub,
}

#[workflow]
impl Journey for JourneyImpl {
    async fn run(&self, n: u64) -> Result<u64, String> {
        let failed = |e| format!("{e:?}");
        let a = self.steps.add(n, 1).await.map_err(failed)?;
        workflow::sleep(TIMER).await;
        let b = self.steps.add(a, 10).await.map_err(failed)?;
        self.steps.add(b, 100).await.map_err(failed)
    }
}

/// Commands each run schedules: three calls and one timer.
const STEPS_PER_RUN: usize = 4;

// ---- A broker of the test's own --------------------------------------------------------

#[path = "support/broker.rs"]
mod broker;
#[path = "support/redeliveries.rs"]
mod redeliveries;
use broker::Broker;

// ---- Observing the backends ------------------------------------------------------------

/// What the wrappers saw.
#[derive(Default)]
struct Counts {
    delivered: redeliveries::Redeliveries,
    /// Set when the restarted broker is ready.
    restarted: AtomicBool,
    deliveries_after_restart: AtomicU64,
    publishes_after_restart: AtomicU64,
    /// Transport errors returned to the workers.
    errors: AtomicU64,
    /// Commits refused by the state store (a redelivered message, already applied, or a
    /// stale version).
    conflicts: AtomicU64,
}

impl Counts {
    fn error<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

/// A transport that counts deliveries and redeliveries.
#[derive(Clone)]
struct Counting<T> {
    inner: T,
    counts: Arc<Counts>,
}

impl<T: Transport + Clone> Transport for Counting<T> {
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), StoreError> {
        let n = messages.len() as u64;
        let published = self.counts.error(self.inner.publish(messages).await);
        if published.is_ok() && self.counts.restarted.load(Ordering::SeqCst) {
            self.counts
                .publishes_after_restart
                .fetch_add(n, Ordering::Relaxed);
        }
        published
    }

    async fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Received, StoreError> {
        let received = self
            .counts
            .error(self.inner.receive(topics, max, lease).await)?;
        let c = &self.counts;
        c.delivered.record(&received.deliveries);
        if c.restarted.load(Ordering::SeqCst) {
            let n = received.deliveries.len() as u64;
            c.deliveries_after_restart.fetch_add(n, Ordering::Relaxed);
        }
        Ok(received)
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), StoreError> {
        self.counts.error(self.inner.settle(settlements).await)
    }

    fn activity(&self) -> Activity {
        self.inner.activity()
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(limit).await
    }

    fn max_message_bytes(&self) -> Option<usize> {
        self.inner.max_message_bytes()
    }
}

/// The in-memory state store, counting conflicts.
#[derive(Clone)]
struct Conflicts {
    inner: MemoryStateStore,
    counts: Arc<Counts>,
}

impl StateStore for Conflicts {
    async fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        self.inner.load(id, with_history).await
    }

    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>> {
        let committed = self.inner.commit(transitions);
        let counts = Arc::clone(&self.counts);
        let (reply, answer) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let outcomes = committed.await;
            if let Ok(outcomes) = &outcomes {
                let n = outcomes
                    .iter()
                    .filter(|o| **o == CommitOutcome::Conflict)
                    .count();
                counts.conflicts.fetch_add(n as u64, Ordering::Relaxed);
            }
            let _ = reply.send(outcomes);
        });
        Pending::new(answer)
    }

    fn finished(&self) -> Finished {
        self.inner.finished()
    }

    fn settles_on_commit(&self) -> bool {
        self.inner.settles_on_commit()
    }

    async fn outbox(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox(max).await
    }

    async fn clear_outbox(&self, ids: Vec<u64>) -> Result<(), StoreError> {
        self.inner.clear_outbox(ids).await
    }
}

/// The warnings and errors logged, on every thread: a count per kind (the message up to its
/// first colon) and the first few in full, with their fields.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<BTreeMap<String, Kind>>>);

/// How many warnings of one kind, and the first few.
type Kind = (u32, Vec<String>);

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            name => self.rest.push_str(&format!(" {name}={value:?}")),
        }
    }
}

impl<S: Subscriber> Layer<S> for Warnings {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() <= Level::WARN {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let kind = fields
                .message
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut all = self.0.lock().unwrap();
            let (count, samples) = all.entry(kind).or_default();
            *count += 1;
            if samples.len() < 3 {
                samples.push(format!("{}{}", fields.message, fields.rest));
            }
        }
    }
}

impl std::fmt::Display for Warnings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (kind, (count, samples)) in self.0.lock().unwrap().iter() {
            writeln!(f, "  {count} x {kind}")?;
            for sample in samples {
                writeln!(f, "      {sample}")?;
            }
        }
        Ok(())
    }
}

// ---- The test --------------------------------------------------------------------------

fn config() -> WorkerConfig {
    WorkerConfig {
        retry: RetryPolicy {
            max_attempts: 20,
            initial_delay: Duration::from_millis(200),
            multiplier: 2.0,
            max_delay: Duration::from_secs(2),
            jitter: 0.0,
        },
        task_timeout: Duration::from_secs(5),
        task_lease_margin: Duration::from_secs(5),
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

async fn start(client: &Client<Conflicts>, ids: std::ops::Range<u64>) -> Vec<(u64, WorkflowId)> {
    let mut started = Vec::new();
    for n in ids {
        let id = WorkflowId::new(format!("journey-{n}"));
        client
            .dispatch_with_id(id.clone(), JourneyStub.run(n))
            .await
            .expect("stored");
        started.push((n, id));
    }
    started
}

/// The warnings of this test binary (a global subscriber: the workers log from every thread).
fn warnings() -> &'static Warnings {
    static WARNINGS: OnceLock<Warnings> = OnceLock::new();
    WARNINGS.get_or_init(|| {
        let warnings = Warnings::default();
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(warnings.clone()),
        )
        .expect("the only global subscriber");
        warnings
    })
}

/// One worker process crashes nothing: the broker does. See the module documentation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_complete_exactly_once_across_a_broker_sigkill_and_restart() {
    let Some(broker) = Broker::start("restart") else {
        return;
    };
    run(&broker, 1, Crash::KillAndRestart).await;
}

/// Two workers on one state store, no broker crash. Ownership of an instance moves between
/// them as consumers come and go, so a worker's cached copy can fall behind the store: the
/// worker drops it on an event it does not know and tries again on the stored state, and a
/// step computed on a stale copy fails its compare-and-set and is delivered again soon. Every
/// workflow completes; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_state_store_complete_every_workflow() {
    let Some(broker) = Broker::start("two-workers") else {
        return;
    };
    run(&broker, 2, Crash::None).await;
}

/// What happens to the broker while the workflows run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Crash {
    None,
    KillAndRestart,
}

async fn run(broker: &Broker, worker_count: usize, crash: Crash) {
    let warnings = warnings();
    let counts = Arc::new(Counts::default());
    let state = Conflicts {
        inner: MemoryStateStore::new(),
        counts: Arc::clone(&counts),
    };
    let options =
        PulsarOptions::new(&broker.url).with_topic_prefix(format!("restart{}", std::process::id()));
    let steps = StepsImpl::default();
    let mut transports = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..worker_count {
        let transport = PulsarTransport::connect(options.clone()).await.unwrap();
        let counting = Counting {
            inner: transport.clone(),
            counts: Arc::clone(&counts),
        };
        workers.push(
            Worker::with_backends(counting, state.clone())
                .service(StepsDispatcher::new(steps.clone()))
                .workflow(JourneyImpl::default)
                .config(config())
                .start(),
        );
        transports.push(transport);
    }
    let client = Client::with_store_writes(transports[0].clone(), state.clone());
    let began = Instant::now();

    // 50 workflows; the broker dies once some passed their first call and before any timer
    // fired: timers wait in the broker across the crash.
    let mut started = start(&client, 0..BEFORE_KILL).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let calls = steps.calls.load(Ordering::SeqCst);
        if calls >= BEFORE_KILL / 2 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A client over the broker (another process, say) waits for the first workflows' results
    // across the crash: it asked before the kill, and the reports come after the restart.
    let watcher = Client::with_backends(transports[0].clone(), state.clone());
    let mut watched = Vec::new();
    for (n, id) in &started {
        let handle = watcher.handle::<Result<u64, String>>(id.clone());
        let waited = tokio::spawn(async move { handle.result_within(ALL_DONE_WITHIN).await });
        watched.push((*n, id.clone(), waited));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // its requests reach the broker
    let killed_at = began.elapsed();
    let calls_before_kill = steps.calls.load(Ordering::SeqCst);
    if crash == Crash::KillAndRestart {
        broker.script("kill");
    }
    let mut done_at_kill = 0;
    for (_, id) in &started {
        let stored = state.load(id, false).await.unwrap().expect("stored");
        done_at_kill += usize::from(stored.state.is_final());
    }
    assert!(calls_before_kill > 0, "no progress before the kill");
    assert_eq!(done_at_kill, 0, "the kill came after workflows finished");

    // Started while the broker is down: the relay publishes them once it is back.
    started.extend(start(&client, BEFORE_KILL..BEFORE_KILL + WHILE_DOWN).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down = Instant::now();
    if crash == Crash::KillAndRestart {
        broker.script("restart");
    }
    let restarted_at = began.elapsed();
    counts.restarted.store(true, Ordering::SeqCst);
    println!(
        "killed at {killed_at:?} after {calls_before_kill} calls; restarted at {restarted_at:?} \
         (down {:?} + {:?} to start)",
        Duration::from_secs(2),
        down.elapsed()
    );
    started.extend(
        start(
            &client,
            BEFORE_KILL + WHILE_DOWN..BEFORE_KILL + WHILE_DOWN + AFTER_RESTART,
        )
        .await,
    );

    // Every workflow completes with its result.
    let deadline = began + ALL_DONE_WITHIN;
    for (n, id) in &started {
        let handle = client.handle::<Result<u64, String>>(id.clone());
        let left = deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout(left, handle.result())
            .await
            .unwrap_or_else(|_| {
                panic!("{id} not done within {ALL_DONE_WITHIN:?}; warnings:\n{warnings}")
            })
            .expect("completes");
        assert_eq!(result, Ok(n + 111), "{id}");
    }
    let all_done = began.elapsed();
    for (n, id, waited) in watched {
        let reported = waited.await.expect("the waiting task ran");
        assert_eq!(
            reported.expect("reported"),
            Ok(n + 111),
            "{id}, over the broker"
        );
    }

    // Every step applied once; no timer fired early.
    for (_, id) in &started {
        let stored = state.load(id, true).await.unwrap().expect("stored");
        let mut scheduled = BTreeMap::new();
        let mut completed: BTreeMap<u32, u32> = BTreeMap::new();
        for event in &stored.history {
            match event {
                HistoryEvent::Scheduled(record) => {
                    let again = scheduled.insert(record.position, record.command.clone());
                    assert!(
                        again.is_none(),
                        "{id}: position {} scheduled twice",
                        record.position
                    );
                }
                HistoryEvent::Completed(completion) => {
                    *completed.entry(completion.position).or_insert(0) += 1;
                    let command = scheduled
                        .get(&completion.position)
                        .unwrap_or_else(|| panic!("{id}: completion before its command"));
                    if let Command::StartTimer { fire_at } = command {
                        assert!(
                            completion.at >= *fire_at,
                            "{id}: the timer due at {fire_at:?} fired at {:?}",
                            completion.at
                        );
                        assert!(
                            *fire_at >= stored.header.started_at + TIMER,
                            "{id}: a 2 s timer"
                        );
                    }
                }
                HistoryEvent::Signaled(_) => panic!("{id}: no signals here"),
            }
        }
        assert_eq!(scheduled.len(), STEPS_PER_RUN, "{id}: {scheduled:?}");
        assert_eq!(
            completed.keys().copied().collect::<Vec<_>>(),
            scheduled.keys().copied().collect::<Vec<_>>(),
            "{id}: every command completed"
        );
        assert!(
            completed.values().all(|n| *n == 1),
            "{id}: a step applied twice: {completed:?}"
        );
    }

    // The restarted broker delivered what was published after it came back.
    let after = counts.deliveries_after_restart.load(Ordering::Relaxed);
    let published_after = counts.publishes_after_restart.load(Ordering::Relaxed);
    assert!(
        after > 0 && published_after > 0,
        "deliveries after the restart: {after}, publishes: {published_after}"
    );

    for worker in workers {
        worker.shutdown().await;
    }
    for transport in &transports {
        transport.close().await;
    }
    let calls = steps.calls.load(Ordering::SeqCst);
    let runs = started.len() as u64;
    println!(
        "{runs} workflows done at {all_done:?} ({:?} after the restart); deliveries {}, \
         redelivered {} (after the restart: {after} deliveries, {published_after} publishes); \
         state-store conflicts {}; service calls {calls} for {} steps; transport errors {}",
        all_done.saturating_sub(restarted_at),
        counts.delivered.deliveries.load(Ordering::Relaxed),
        counts.delivered.redeliveries.load(Ordering::Relaxed),
        counts.conflicts.load(Ordering::Relaxed),
        runs * 3,
        counts.errors.load(Ordering::Relaxed),
    );
    println!("warnings:\n{warnings}");
}
