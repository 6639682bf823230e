//! Durable timers survive a broker SIGKILL (issue 12): 1,000 workflows each wait on a timer
//! on two workflow workers (Pulsar transport, PostgreSQL state, the database's clock); once
//! every timer is pending the broker is SIGKILLed and restarted on the same data. Every
//! timer fires exactly once (one completion per timer in each stored history), none is lost
//! (every workflow completes, the `timers` table ends empty), none early (the transition
//! that applied it committed at or after its due time by the database's clock), and nothing
//! is dead-lettered. The broker's redeliveries are counted and printed.
//!
//! Needs a PostgreSQL server (`source $(scripts/postgres.sh start)`) and
//! `INFINITIC_PULSAR_RUN` (the test starts its own broker in `$INFINITIC_PULSAR_RUN/timers`);
//! without them it is skipped, unless `CI=true`. `scripts/test-distributed.sh` runs it:
//!
//! ```text
//! INFINITIC_PULSAR_RUN=/tmp/ipt cargo test --features postgres,pulsar --test pulsar_timers -- --nocapture
//! ```
#![cfg(all(feature = "postgres", feature = "pulsar"))]

#[path = "support/broker.rs"]
mod broker;
#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod pg;
#[path = "support/redeliveries.rs"]
mod redeliveries;

use broker::Broker;
use infinitic::prelude::*;
use infinitic::store::postgres::{PostgresOptions, PostgresStore};
use infinitic::store::pulsar::{PulsarOptions, PulsarTransport};
use infinitic::store::{Activity, DeadLetter, Outgoing, Received, Settlement, StoreError};
use infinitic::{Client, Command, HistoryEvent, StateStore, Transport, Worker, WorkerConfig};
use infinitic::{Timestamp, WorkflowId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKFLOWS: u64 = 1_000;
/// Long enough for every timer to be pending before the kill.
const TIMER: Duration = Duration::from_secs(10);
const WORKERS: usize = 2;
const ALL_DONE_WITHIN: Duration = Duration::from_secs(90);

#[workflow]
pub trait Nap {
    /// Sleeps `TIMER`; answers `n`.
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct NapImpl;

#[workflow]
impl Nap for NapImpl {
    async fn run(&self, n: u64) -> u64 {
        workflow::sleep(TIMER).await;
        n
    }
}

/// Deliveries seen, and how many were of a message delivered before.
#[derive(Default)]
struct Counts {
    delivered: redeliveries::Redeliveries,
    /// Timers published again by the relays' sweeps (the relay's own publications carry no
    /// timer mark).
    swept: AtomicU64,
}

/// A transport that counts deliveries and redeliveries.
#[derive(Clone)]
struct Counting {
    inner: PulsarTransport,
    counts: Arc<Counts>,
}

impl Transport for Counting {
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), StoreError> {
        let swept = messages.iter().filter(|m| m.timer.is_some()).count() as u64;
        self.inner.publish(messages).await?;
        self.counts.swept.fetch_add(swept, Ordering::Relaxed);
        Ok(())
    }

    async fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Received, StoreError> {
        let received = self.inner.receive(topics, max, lease).await?;
        self.counts.delivered.record(&received.deliveries);
        Ok(received)
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

    fn max_message_bytes(&self) -> Option<usize> {
        self.inner.max_message_bytes()
    }
}

fn count(url: &str, sql: &str) -> u64 {
    pg::Server::try_psql(url, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_timers_fire_once_none_lost_none_early_across_a_broker_sigkill() {
    let Some(server) = pg::server() else { return };
    let Some(broker) = Broker::start("timers") else {
        return;
    };
    let schema = pg::unique("timers1k");
    let options = PostgresOptions {
        // A broker that lost a timer is made up for 5 s after its due time.
        timer_grace: Duration::from_secs(5),
        ..pg::options(&schema)
    };
    let pulsar =
        PulsarOptions::new(&broker.url).with_topic_prefix(format!("timers{}", std::process::id()));
    let counts = Arc::new(Counts::default());
    let mut workers = Vec::new();
    let mut transports = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..WORKERS {
        // A process each: its own store handle (relay) and broker connection.
        let state = PostgresStore::connect(&server.url, options.clone())
            .await
            .unwrap();
        let transport = PulsarTransport::connect(pulsar.clone()).await.unwrap();
        let counting = Counting {
            inner: transport.clone(),
            counts: Arc::clone(&counts),
        };
        workers.push(
            Worker::with_backends(counting, state.clone())
                .workflow(NapImpl::default)
                .config(WorkerConfig {
                    clock: state.clock(),
                    poll_interval: Duration::from_millis(50),
                    ..WorkerConfig::default()
                })
                .start(),
        );
        transports.push(transport);
        stores.push(state);
    }
    let state = stores[0].clone();
    let client =
        Client::with_backends(transports[0].clone(), state.clone()).with_clock(state.clock());
    let began = Instant::now();
    // Dispatched together (the store commits them in batches).
    let ids: Vec<(u64, WorkflowId)> = (0..WORKFLOWS)
        .map(|n| (n, WorkflowId::new(format!("nap-{n}"))))
        .collect();
    let dispatches: Vec<_> = ids
        .iter()
        .map(|(n, id)| {
            let (client, id, n) = (client.clone(), id.clone(), *n);
            tokio::spawn(async move { client.dispatch_with_id(id, NapStub.run(n)).await })
        })
        .collect();
    for dispatch in dispatches {
        dispatch.await.unwrap().unwrap();
    }
    // Every timer pending (recorded, none fired) before the kill.
    let pending = format!("SELECT count(*) FROM {schema}.timers");
    let deadline = Instant::now() + TIMER - Duration::from_secs(2);
    while count(&server.url, &pending) < WORKFLOWS {
        assert!(
            Instant::now() < deadline,
            "the timers were not all started in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_pending = began.elapsed();
    broker.script("kill");
    // None fired before the kill: each firing deletes its row.
    assert_eq!(
        count(&server.url, &pending),
        WORKFLOWS,
        "a timer fired before the kill"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.script("restart");
    let restarted = began.elapsed();

    // None lost: every workflow completes.
    let deadline = began + ALL_DONE_WITHIN;
    for (n, id) in &ids {
        let handle = client.handle::<u64>(id.clone());
        let left = deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout(left, handle.result())
            .await
            .unwrap_or_else(|_| panic!("{id} not done within {ALL_DONE_WITHIN:?}"))
            .expect("completes");
        assert_eq!(result, *n, "{id}");
    }
    let all_done = began.elapsed();

    // When each instance's last transition (the one that applied its timer) committed, by
    // the database's clock.
    let rows = pg::Server::try_psql(
        &server.url,
        &format!(
            "SELECT id || ' ' || (extract(epoch FROM updated_at) * 1000)::bigint
             FROM {schema}.workflows"
        ),
    )
    .unwrap();
    let committed_at: BTreeMap<String, u64> = rows
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(id, ms)| (id.to_string(), ms.parse().expect("milliseconds")))
        .collect();
    let mut latest_lateness = Duration::ZERO;
    for (_, id) in &ids {
        let stored = state.load(id, true).await.unwrap().expect("stored");
        let fire_at = stored
            .history
            .iter()
            .find_map(|e| match e {
                HistoryEvent::Scheduled(record) => match record.command {
                    Command::StartTimer { fire_at } => Some(fire_at),
                    _ => None,
                },
                _ => None,
            })
            .unwrap_or_else(|| panic!("{id}: a timer scheduled"));
        let fired = stored
            .history
            .iter()
            .filter(|e| matches!(e, HistoryEvent::Completed(_)))
            .count();
        assert_eq!(fired, 1, "{id}: fired once: {:?}", stored.history);
        let at = Timestamp::from_millis(committed_at[id.as_str()]);
        assert!(
            at >= fire_at,
            "{id}: the timer due at {fire_at:?} was applied at {at:?} by the database's clock"
        );
        latest_lateness = latest_lateness.max(at.saturating_duration_since(fire_at));
    }
    assert_eq!(count(&server.url, &pending), 0, "every timer consumed");
    for worker in workers {
        worker.shutdown().await;
    }
    let dead = transports[0].dead_letters(10).await.unwrap();
    assert!(dead.is_empty(), "dead letters: {dead:?}");
    for transport in &transports {
        transport.close().await;
    }
    println!(
        "{WORKFLOWS} timers of {TIMER:?}: all pending at {all_pending:?}, broker killed and \
         restarted by {restarted:?}, all fired once by {all_done:?} (latest {latest_lateness:?} \
         after its due time); deliveries {}, redeliveries {}, timers published again by the \
         sweep {}",
        counts.delivered.deliveries.load(Ordering::Relaxed),
        counts.delivered.redeliveries.load(Ordering::Relaxed),
        counts.swept.load(Ordering::Relaxed),
    );
}
