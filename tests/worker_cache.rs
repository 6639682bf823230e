//! The workflow worker's instance cache on the embedded store: with fewer places than live
//! instances, the least recently used are evicted and rebuilt from history when their next
//! event comes, every workflow still ends with the right result, and the stats show it.

use infinitic::prelude::*;
use infinitic::store::sqlite::Durability;
use infinitic::store::sqlite::OpenMode;
use infinitic::worker::CacheStats;
use infinitic::{Client, SqliteStore, Worker, WorkerConfig};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[service]
pub trait Gate {
    /// Returns `n + 1` once the gate is open.
    async fn pass(&self, n: u64) -> u64;
}

#[derive(Clone, Default)]
struct GateImpl {
    open: Arc<AtomicBool>,
}

impl Gate for GateImpl {
    async fn pass(&self, n: u64) -> u64 {
        while !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n + 1
    }
}

#[workflow]
pub trait Chain {
    async fn run(&self, from: u64, steps: u32) -> u64;
}

#[derive(Default)]
pub struct ChainImpl {
    gate: GateStub,
}

#[workflow]
impl Chain for ChainImpl {
    async fn run(&self, from: u64, steps: u32) -> u64 {
        let mut n = from;
        for _ in 0..steps {
            n = self.gate.pass(n).await.unwrap_or(0);
        }
        n
    }
}

async fn within<T>(what: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), what)
        .await
        .expect("in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_more_live_instances_than_places_the_least_recently_used_are_evicted_and_rebuilt() {
    let store = SqliteStore::open_with(":memory:", OpenMode::CreateIfMissing, Durability::InMemory)
        .unwrap();
    let gate = GateImpl::default();
    let capacity = 2;
    let worker = Worker::new(store.clone())
        .service(GateDispatcher::new(gate.clone()))
        .workflow(ChainImpl::default)
        .config(WorkerConfig {
            cache_capacity: capacity,
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    let client = Client::new(store);
    let empty = CacheStats {
        capacity,
        ..CacheStats::default()
    };
    assert_eq!(worker.cache_stats(), empty);

    // Alone, an instance stays live: each of its three steps finds it in memory, and it is
    // dropped when it completes.
    gate.open.store(true, Ordering::SeqCst);
    assert_eq!(within(client.run(ChainStub.run(0, 3))).await.unwrap(), 3);
    assert_eq!(worker.cache_stats(), CacheStats { hits: 3, ..empty });

    // Five at once while no step can end: each start is kept, so three go to make room.
    gate.open.store(false, Ordering::SeqCst);
    let mut handles = Vec::new();
    for i in 1..=5u64 {
        let call = ChainStub.run(100 * i, 2);
        handles.push(
            client
                .dispatch_with_id(format!("chain-{i}"), call)
                .await
                .unwrap(),
        );
    }
    within(async {
        while worker.cache_stats().evictions < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let full = worker.cache_stats();
    assert_eq!(
        (full.size, full.evictions, full.misses),
        (2, 3, 0),
        "{full:?}"
    );

    // The evicted ones are rebuilt from their history when their steps end; all end right.
    gate.open.store(true, Ordering::SeqCst);
    for (i, handle) in (1..=5u64).zip(&handles) {
        assert_eq!(within(handle.result()).await.unwrap(), 100 * i + 2);
    }
    let stats = worker.cache_stats();
    assert!(stats.misses >= 3, "each evicted instance missed: {stats:?}");
    assert!(stats.hits >= 3 && stats.evictions >= 3, "{stats:?}");
    assert_eq!(stats.hits + stats.misses, 3 + 5 * 2, "one lookup per step");
    assert_eq!(
        (stats.size, stats.capacity),
        (0, capacity),
        "finished: dropped"
    );
    worker.shutdown().await;
}
