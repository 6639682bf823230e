//! Instance generations: a workflow id used again (after its instance ended, or by a run that
//! continues as new) starts a new generation. Its command, child and task ids carry the
//! generation, so a late completion meant for an earlier instance never applies to the later
//! one and service idempotency keys never repeat. The first generation keeps `wf/run/pos`.

use infinitic::message::{encode_message, Message};
use infinitic::prelude::*;
use infinitic::store::memory::MemoryStore;
use infinitic::store::{Outgoing, Transition, WorkflowHeader};
use infinitic::{
    Client, CommandId, Generation, MethodRun, StateStore, StepOutcome, Timestamp, Transport,
    Worker, WorkerConfig, WorkflowId, WorkflowState,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[service]
pub trait Echo {
    async fn echo(&self, n: u64) -> u64;
}

/// Records the task id of every execution.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<String>>>);

impl Echo for Recording {
    async fn echo(&self, n: u64) -> u64 {
        let task = infinitic::task::current().expect("run as a task");
        self.0.lock().unwrap().push(task.id.to_string());
        n
    }
}

#[workflow]
pub trait Leaf {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct LeafImpl {
    echo: EchoStub,
}

#[workflow]
impl Leaf for LeafImpl {
    async fn run(&self, n: u64) -> u64 {
        self.echo.echo(n).await.unwrap_or(u64::MAX)
    }
}

#[workflow]
pub trait Root {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct RootImpl {
    echo: EchoStub,
    leaf: LeafStub,
}

#[workflow]
impl Root for RootImpl {
    async fn run(&self, n: u64) -> u64 {
        workflow::sleep(Duration::from_millis(300)).await;
        let a = self.echo.echo(n).await.unwrap_or(u64::MAX);
        let b = self.leaf.run(n + 1).await.unwrap_or(u64::MAX);
        a + b
    }
}

/// Stores instance `id` of generation `generation` as pending, with its start message: what
/// a client does for a new instance (a reused id gets the next generation).
async fn start(store: &MemoryStore, id: &WorkflowId, generation: Generation, n: u64) {
    let input = infinitic::encode(&(n,)).unwrap();
    let now = Timestamp::wall_clock();
    let message = Message::StartWorkflow {
        workflow_id: id.clone(),
        generation,
        workflow: "Root".into(),
        method: "run".into(),
        input: input.clone(),
        parent: None,
        pending: true,
        reply_to: None,
    };
    let transition = Transition {
        workflow_id: id.clone(),
        expected_version: 0,
        header: Some(WorkflowHeader {
            generation,
            workflow: "Root".into(),
            method: "run".into(),
            input,
            started_at: now,
            parent: None,
        }),
        state: WorkflowState::Pending,
        append: Vec::new(),
        outbox: vec![Outgoing::new(
            "workflow:Root",
            id.to_string(),
            encode_message(&message),
            now,
        )],
        consumed: None,
        dead_letter: None,
        report_to: None,
    };
    store.commit(vec![transition]).await.unwrap();
}

async fn run(cache_capacity: usize) {
    let store = MemoryStore::new();
    let tasks = Recording::default();
    let worker = Worker::new(store.clone())
        .service(EchoDispatcher::new(tasks.clone()))
        .workflow(RootImpl::default)
        .workflow(LeafImpl::default)
        .config(WorkerConfig {
            cache_capacity,
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    let id = WorkflowId::new("root");
    start(&store, &id, Generation(1), 20).await;
    // While it sleeps: the completion of its timer, as the first generation's instance with
    // this id would have sent it, arrives late. It must not wake the second generation.
    let stale_at = Timestamp::from_millis(12_345);
    let stale = Message::CommandCompleted {
        command: CommandId::new(id.clone(), MethodRun(0), 0),
        outcome: StepOutcome::Completed(infinitic::encode(&()).unwrap()),
        at: stale_at,
    };
    store
        .publish(vec![Outgoing::new(
            "workflow:Root",
            id.to_string(),
            encode_message(&stale),
            Timestamp::wall_clock(),
        )])
        .await
        .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        Client::new(store.clone())
            .handle::<u64>(id.clone())
            .result(),
    )
    .await
    .expect("finishes")
    .unwrap();
    assert_eq!(result, 41);

    let mut seen = tasks.0.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        vec!["root@1/0/1", "root@1/0/2/0/0"],
        "task ids carry the generation"
    );
    let child = store
        .load(&WorkflowId::new("root@1/0/2"), false)
        .await
        .unwrap()
        .expect("the child's id carries its parent's generation");
    assert!(matches!(child.state, WorkflowState::Completed(_)));
    let stored = store.load(&id, true).await.unwrap().unwrap();
    assert_eq!(stored.header.generation, Generation(1));
    let stale_applied = stored.history.iter().any(|event| match event {
        infinitic::HistoryEvent::Completed(c) => c.at == stale_at,
        _ => false,
    });
    assert!(!stale_applied, "a completion of generation 0 was applied");
    assert_eq!(store.dead_letters(10).await.unwrap(), Vec::new());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_generation_has_its_own_ids_and_ignores_completions_of_an_earlier_one() {
    run(10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_the_cold_path_when_every_event_replays_history() {
    run(0).await;
}
