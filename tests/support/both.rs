#![allow(dead_code)] // each test file uses a part
//! Running one workflow on the `WorkflowTester` and on the embedded runtime, to compare: a
//! worker on the in-memory store (wall clock), started with what a test registers.

use infinitic::status::{Description, Waiting};
use infinitic::store::memory::MemoryStore;
use infinitic::{
    Client, History, RetryPolicy, RunningWorker, StateStore, Worker, WorkerConfig, WorkflowCall,
    WorkflowId,
};
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// One worker on the in-memory store, on the wall clock.
pub struct Runtime {
    worker: RunningWorker,
    pub client: Client<MemoryStore>,
    pub store: MemoryStore,
}

impl Runtime {
    /// A worker with what `register` adds, retrying by `retry`.
    pub fn start(
        register: impl FnOnce(Worker<MemoryStore>) -> Worker<MemoryStore>,
        retry: RetryPolicy,
    ) -> Self {
        let store = MemoryStore::new();
        let worker = register(Worker::new(store.clone()))
            .config(WorkerConfig {
                poll_interval: Duration::from_millis(5),
                retry,
                ..WorkerConfig::default()
            })
            .start();
        Self {
            worker,
            client: Client::new(store.clone()),
            store,
        }
    }

    /// Runs `call` on instance `id` and returns its result.
    pub async fn run<R: DeserializeOwned>(&self, id: &str, call: WorkflowCall<R>) -> R {
        let handle = self.client.dispatch_with_id(id, call).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle.result())
            .await
            .expect("finishes")
            .unwrap()
    }

    /// Starts `call` and returns the instance's description once `settled` accepts it.
    pub async fn waiting<R>(
        &self,
        id: &str,
        call: WorkflowCall<R>,
        settled: impl Fn(&Description) -> bool,
    ) -> Description {
        self.client.dispatch_with_id(id, call).await.unwrap();
        let id = WorkflowId::new(id);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(description) = self.client.describe(&id).await.unwrap() {
                if settled(&description) {
                    return description;
                }
                assert!(Instant::now() < deadline, "{id}: {description}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The stored history of instance `id`.
    pub async fn history(&self, id: &str) -> History {
        let id = WorkflowId::new(id);
        let stored = self.store.load(&id, true).await.unwrap().expect("stored");
        History {
            workflow_id: id,
            generation: stored.header.generation,
            workflow: stored.header.workflow,
            method: stored.header.method,
            input: stored.header.input,
            started_at: stored.header.started_at,
            events: stored.history,
        }
    }

    pub async fn stop(self) {
        self.worker.shutdown().await;
    }
}

/// What a description says is waited on: the commands and what they are (not since when: the
/// tester's clock is virtual).
#[allow(dead_code)]
pub fn waited_on(description: &Description) -> Vec<(String, Waiting)> {
    description
        .waiting_on
        .iter()
        .map(|w| (w.command.to_string(), w.what.clone()))
        .collect()
}
