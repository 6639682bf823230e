//! `WorkflowTester` and the embedded runtime agree on what a parent sees of its children: the
//! child's id (so its deterministic randomness), and the typed failure of a child started with
//! arguments it cannot decode. Each workflow runs on both and the outputs are compared.

use infinitic::prelude::*;
use infinitic::store::memory::MemoryStore;
use infinitic::{Client, Worker, WorkerConfig, WorkflowTester};
use std::time::Duration;

#[workflow]
pub trait Child {
    async fn run(&self, n: u64) -> (String, u64);
}

#[derive(Default)]
pub struct ChildImpl;

#[workflow]
impl Child for ChildImpl {
    async fn run(&self, n: u64) -> (String, u64) {
        (
            workflow::id().to_string(),
            workflow::random() % 1_000_000 + n,
        )
    }
}

/// The same workflow name as `Child`, as an older contract declared it: another argument type.
#[workflow(name = "Child")]
pub trait OldChild {
    async fn run(&self, text: String) -> (String, u64);
}

#[workflow]
pub trait Parent {
    async fn run(&self) -> String;
}

#[derive(Default)]
pub struct ParentImpl {
    child: ChildStub,
    old_child: OldChildStub,
}

#[workflow]
impl Parent for ParentImpl {
    async fn run(&self) -> String {
        let first = self.child.run(1).await;
        let second = self.child.run(2).await;
        let mismatched = match self.old_child.run("one".into()).await {
            Ok(_) => "accepted".to_string(),
            Err(StepError::Invalid { .. }) => "invalid".to_string(),
            Err(other) => format!("{other:?}"),
        };
        format!("{first:?} {second:?} {mismatched}")
    }
}

async fn on_the_tester() -> String {
    WorkflowTester::new()
        .with_id("parent")
        .child_workflow(ChildImpl::default)
        .run(ParentImpl::default, ParentStub.run())
        .await
        .unwrap()
        .output
}

async fn on_the_runtime() -> String {
    let store = MemoryStore::new();
    let worker = Worker::new(store.clone())
        .workflow(ParentImpl::default)
        .workflow(ChildImpl::default)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    let client = Client::new(store);
    let handle = client
        .dispatch_with_id("parent", ParentStub.run())
        .await
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(10), handle.result())
        .await
        .expect("finishes")
        .unwrap();
    worker.shutdown().await;
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_have_the_same_ids_randomness_and_failures_on_the_tester_and_the_runtime() {
    let (tested, run) = (on_the_tester().await, on_the_runtime().await);
    assert_eq!(tested, run);
    assert!(tested.starts_with(r#"Ok(("parent/0/0", "#), "{tested}");
    assert!(tested.contains(r#"Ok(("parent/0/1", "#), "{tested}");
    assert!(tested.ends_with(" invalid"), "{tested}");
}
