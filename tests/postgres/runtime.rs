//! Workflows end to end with their state in PostgreSQL, messages on the in-memory transport:
//! the runtime works on the store (relay of the outbox, settling after commit, conflicts).

use super::pg;
use infinitic::prelude::*;
use infinitic::store::memory::MemoryStore;
use infinitic::{Client, RetryPolicy, StateStore, Transport, Worker, WorkerConfig};
use std::time::Duration;

#[service]
pub trait Counter {
    async fn inc(&self, n: u64) -> u64;
}

struct CounterImpl;
impl Counter for CounterImpl {
    async fn inc(&self, n: u64) -> u64 {
        n + 1
    }
}

#[workflow]
pub trait Steps {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct StepsImpl {
    counter: CounterStub,
}

#[workflow]
impl Steps for StepsImpl {
    async fn run(&self, mut n: u64) -> u64 {
        for _ in 0..5 {
            n = self.counter.inc(n).await.unwrap_or(0);
        }
        workflow::sleep(Duration::from_millis(50)).await;
        n
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(20),
            multiplier: 2.0,
            max_delay: Duration::from_secs(1),
            jitter: 0.0,
        },
        poll_interval: Duration::from_millis(5),
        ..WorkerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_run_to_their_end_with_their_state_in_postgres() {
    let Some(server) = pg::server() else { return };
    let state = server.store(&pg::unique("runtime")).await;
    let transport = MemoryStore::new();
    let worker = Worker::with_backends(transport.clone(), state.clone())
        .service(CounterDispatcher::new(CounterImpl))
        .workflow(StepsImpl::default)
        .config(config())
        .start();
    let client = Client::with_backends(transport.clone(), state.clone());
    let mut handles = Vec::new();
    for n in 0..20u64 {
        let handle = client.dispatch_with_id(format!("steps-{n}"), StepsStub.run(n * 10));
        handles.push((n, handle.await.unwrap()));
    }
    for (n, handle) in handles {
        let result = tokio::time::timeout(Duration::from_secs(30), handle.result()).await;
        assert_eq!(result.expect("finishes").expect("completes"), n * 10 + 5);
    }
    worker.shutdown().await;
    // Everything relayed and settled.
    assert_eq!(state.outbox(10).await.unwrap(), Vec::new());
    let topics = ["workflow:Steps", "service:Counter"].map(String::from);
    let left = transport
        .receive(&topics, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(left.deliveries, Vec::new(), "every message was settled");
    let stored = state
        .load(&infinitic::WorkflowId::new("steps-3"), true)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.state.is_final());
    assert!(stored.history.len() >= 10, "{:?}", stored.history);
}
