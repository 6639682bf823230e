//! Two workflow workers on one state store and one transport: an instance's events may reach
//! either worker, so a worker's cached copy of an instance can fall behind the store. The
//! store decides: a cached copy that does not know an event is dropped and the event tried
//! again on the stored state, and a step computed on a stale copy fails its compare-and-set and
//! is delivered again soon. Every workflow completes with every step applied once; nothing is
//! dead-lettered.

use infinitic::prelude::*;
use infinitic::store::memory_state::MemoryStateStore;
use infinitic::{HistoryEvent, StateStore, Transport, WorkflowId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[service]
pub trait Adder {
    async fn add(&self, n: u64, k: u64) -> u64;
}

struct AdderImpl;

impl Adder for AdderImpl {
    async fn add(&self, n: u64, k: u64) -> u64 {
        n + k
    }
}

#[workflow]
pub trait Journey {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct JourneyImpl {
    adder: AdderStub,
}

#[workflow]
impl Journey for JourneyImpl {
    async fn run(&self, mut n: u64) -> u64 {
        for k in 1..=3 {
            n = self.adder.add(n, k).await.unwrap_or(0);
        }
        workflow::sleep(Duration::from_millis(20)).await;
        for k in 4..=5 {
            n = self.adder.add(n, k).await.unwrap_or(0);
        }
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_store_complete_every_workflow_once() {
    let transport = MemoryStore::new();
    let state = MemoryStateStore::new();
    let worker = || {
        Worker::with_backends(transport.clone(), state.clone())
            .workflow(JourneyImpl::default)
            .service(AdderDispatcher::new(AdderImpl))
            .config(WorkerConfig {
                poll_interval: Duration::from_millis(5),
                workflow_batch: 8,
                ..WorkerConfig::default()
            })
            .start()
    };
    let (first, second) = (worker(), worker());
    let client = Client::with_store_writes(transport.clone(), state.clone());
    let count = 40u64;
    for i in 0..count {
        client
            .dispatch_with_id(format!("journey-{i}"), JourneyStub.run(i * 100))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..count {
        let handle = client.handle::<u64>(format!("journey-{i}"));
        let left = deadline.saturating_duration_since(Instant::now());
        let result = handle.result_within(left).await;
        assert_eq!(result.ok(), Some(i * 100 + 15), "journey-{i}");
    }
    for i in 0..count {
        let id = WorkflowId::new(format!("journey-{i}"));
        let stored = state.load(&id, true).await.unwrap().unwrap();
        let mut completed: BTreeMap<u32, usize> = BTreeMap::new();
        for event in &stored.history {
            if let HistoryEvent::Completed(c) = event {
                *completed.entry(c.position).or_default() += 1;
            }
        }
        assert!(
            completed.len() == 6 && completed.values().all(|&n| n == 1),
            "{id}: each step applied once: {completed:?}"
        );
    }
    let dead = transport.dead_letters(10).await.unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    first.shutdown().await;
    second.shutdown().await;
}
