//! A parked instance keeps the events that arrive for it: each is stored with it (appended to
//! its history; the instance stays parked) by the transition that consumes it, so it can be
//! applied when the instance is retried after a fix. Nothing is dropped, nothing waits in the
//! queue, and a redelivered event changes nothing.

use infinitic::message::Message;
use infinitic::prelude::*;
use infinitic::store::memory::MemoryStore;
use infinitic::store::Outgoing;
use infinitic::{
    encode, Client, CommandId, HistoryEvent, MethodRun, StateStore, StepOutcome, Timestamp,
    Transport, Worker, WorkerConfig, WorkflowId, WorkflowState,
};
use std::time::{Duration, Instant};

#[service]
pub trait Echo {
    async fn echo(&self, n: u64) -> u64;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, n: u64) -> u64 {
        n
    }
}

#[workflow]
pub trait Brittle {
    async fn run(&self) -> u64;
}

#[derive(Default)]
pub struct BrittleImpl {
    echo: EchoStub,
}

#[workflow]
impl Brittle for BrittleImpl {
    async fn run(&self) -> u64 {
        let call = self.echo.echo(1);
        let timer = workflow::sleep(Duration::from_millis(150));
        match workflow::select2(call, timer).await {
            // The echo answers first: a bug in the code that handles it parks the instance
            // while its timer is still pending.
            workflow::Either::Left(n) => panic!("a bug after the echo of {n:?}"),
            workflow::Either::Right(()) => 0,
        }
    }
}

/// The instance's completions, as stored.
async fn completions(store: &MemoryStore, id: &WorkflowId) -> (WorkflowState, Vec<u32>) {
    let stored = store.load(id, true).await.unwrap().unwrap();
    let positions = stored
        .history
        .iter()
        .filter_map(|e| match e {
            HistoryEvent::Completed(c) => Some(c.position),
            _ => None,
        })
        .collect();
    (stored.state, positions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_a_parked_instance_are_stored_with_it_once() {
    let store = MemoryStore::new();
    let worker = Worker::new(store.clone())
        .workflow(BrittleImpl::default)
        .service(EchoDispatcher::new(EchoImpl))
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    let client = Client::new(store.clone());
    let id = WorkflowId::new("brittle");
    client
        .dispatch_with_id(id.clone(), BrittleStub.run())
        .await
        .unwrap();

    // Parked by the echo's outcome (position 0); then the timer (position 1) fires and is
    // stored with the parked instance.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (state, positions) = loop {
        let (state, positions) = completions(&store, &id).await;
        if positions.len() == 2 || Instant::now() > deadline {
            break (state, positions);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(positions, vec![0, 1], "{state:?}");
    let WorkflowState::Parked(reason) = &state else {
        panic!("should stay parked: {state:?}");
    };
    assert!(reason.contains("a bug after the echo"), "{reason}");

    // The timer's message delivered again (a broker's redelivery): consumed, nothing added.
    let fired = StepOutcome::Completed(encode(&()).unwrap());
    let command = CommandId::new(id.clone(), MethodRun(0), 1);
    let again = Message::command_completed(command, fired, Timestamp::wall_clock());
    store
        .publish(vec![Outgoing::new(
            "workflow:Brittle".to_string(),
            id.to_string(),
            again.encode(),
            Timestamp::wall_clock(),
        )])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = store
        .receive(
            &["workflow:Brittle".to_string()],
            10,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(taken.deliveries.is_empty(), "the redelivery was consumed");
    assert_eq!(completions(&store, &id).await.1, vec![0, 1]);
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    worker.shutdown().await;
}
