//! Hostile payloads (huge, deeply nested) never crash a worker: they are refused where they
//! are encoded (the sender gets `StepError::Invalid`, a `ClientError` or a parked run naming
//! the limit, and nothing is recorded) and where they are received (dead letter naming the
//! limit, and the waiting workflow told `Invalid`).
//!
//! Debug build on purpose: decoding a value nested 20,000 levels deep with serde recursion
//! overflows a worker thread's stack long before that (at about 2,500 levels).

use infinitic::message::{encode_message, Message, MAGIC, PROTOCOL_VERSION};
use infinitic::prelude::*;

#[path = "support/dead_letters.rs"]
mod dead_letters;
use dead_letters::{raw, show};
use infinitic::store::sqlite::Durability;
use infinitic::store::sqlite::OpenMode;
use infinitic::{
    Client, ClientError, CommandId, LimitError, Limits, MethodRun, SqliteStore, StateStore,
    Timestamp, Transport, Worker, WorkerConfig, WorkflowId, WorkflowState,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A recursive enum: each `Node` is one more map level in MessagePack.
#[derive(Debug, Serialize, Deserialize)]
pub enum Nest {
    Leaf,
    Node(Box<Nest>),
}

impl Nest {
    fn new(levels: u32) -> Nest {
        let mut nest = Nest::Leaf;
        for _ in 0..levels {
            nest = Nest::Node(Box::new(nest));
        }
        nest
    }

    fn levels(&self) -> u32 {
        let (mut levels, mut at) = (0, self);
        while let Nest::Node(inner) = at {
            levels += 1;
            at = inner;
        }
        levels
    }
}

/// Dropping a 20,000-deep chain of boxes recursively would overflow too: that is the value's
/// owner's business (here, the workflow's), so it is taken apart iteratively.
impl Drop for Nest {
    fn drop(&mut self) {
        let Nest::Node(inner) = self else { return };
        let mut next = std::mem::replace(&mut **inner, Nest::Leaf);
        while let Nest::Node(inner) = &mut next {
            let deeper = std::mem::replace(&mut **inner, Nest::Leaf);
            next = deeper;
        }
    }
}

/// MessagePack of `Nest::new(levels)`, built without building the value.
fn nest_bytes(levels: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(levels * 6 + 5);
    for _ in 0..levels {
        bytes.extend_from_slice(&[0x81, 0xa4, b'N', b'o', b'd', b'e']);
    }
    bytes.extend_from_slice(&[0xa4, b'L', b'e', b'a', b'f']);
    bytes
}

/// As an argument tuple `(Nest,)`.
fn nest_args(levels: usize) -> Vec<u8> {
    let mut bytes = vec![0x91];
    bytes.extend(nest_bytes(levels));
    bytes
}

const DEEP: u32 = 20_000;
const FIVE_MIB: u64 = 5 * 1024 * 1024;

#[service]
pub trait Sink {
    async fn take(&self, nest: Nest) -> u32;
    async fn bytes(&self, data: Vec<u8>) -> u64;
    async fn make(&self, len: u64) -> Vec<u8>;
}

/// Nobody serves it: a step on it waits.
#[service]
pub trait Ghost {
    async fn wait(&self) -> u32;
}

struct SinkImpl;
impl Sink for SinkImpl {
    async fn take(&self, nest: Nest) -> u32 {
        nest.levels()
    }
    async fn bytes(&self, data: Vec<u8>) -> u64 {
        data.len() as u64
    }
    async fn make(&self, len: u64) -> Vec<u8> {
        vec![1; len as usize]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Case {
    /// Calls `Sink::take` with a value nested this deep.
    Deep(u32),
    /// Starts a child workflow with a value nested this deep.
    DeepChild(u32),
    /// Calls `Sink::bytes` with this many bytes.
    Big(u64),
    /// Calls `Sink::make` for a result of this many bytes.
    BigResult(u64),
    /// Returns this many bytes.
    BigOutput(u64),
    /// Waits on the unserved `Ghost`.
    Ghost,
}

#[workflow]
pub trait Hostile {
    async fn run(&self, case: Case) -> String;
    async fn keep(&self, nest: Nest) -> u32;
    async fn measure(&self, data: Vec<u8>) -> u64;
}

#[derive(Default)]
pub struct HostileImpl {
    sink: SinkStub,
    ghost: GhostStub,
    child: HostileStub,
}

#[workflow]
impl Hostile for HostileImpl {
    async fn run(&self, case: Case) -> String {
        match case {
            Case::Deep(levels) => show(self.sink.take(Nest::new(levels)).await),
            Case::DeepChild(levels) => show(self.child.keep(Nest::new(levels)).await),
            Case::Big(len) => show(self.sink.bytes(vec![1; len as usize]).await),
            Case::BigResult(len) => show(self.sink.make(len).await.map(|v| v.len())),
            Case::BigOutput(len) => "x".repeat(len as usize),
            Case::Ghost => show(self.ghost.wait().await),
        }
    }

    async fn keep(&self, nest: Nest) -> u32 {
        nest.levels()
    }

    async fn measure(&self, data: Vec<u8>) -> u64 {
        data.len() as u64
    }
}

struct Setup {
    store: SqliteStore,
    client: Client<SqliteStore>,
    _worker: infinitic::RunningWorker,
}

fn setup() -> Setup {
    let store = SqliteStore::open_with(":memory:", OpenMode::CreateIfMissing, Durability::InMemory)
        .unwrap();
    let worker = Worker::new(store.clone())
        .service(SinkDispatcher::new(SinkImpl))
        .workflow(HostileImpl::default)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    Setup {
        client: Client::new(store.clone()),
        store,
        _worker: worker,
    }
}

async fn run(s: &Setup, id: &str, case: Case) -> Result<String, ClientError> {
    let handle = s
        .client
        .dispatch_with_id(id, HostileStub.run(case))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), handle.result())
        .await
        .expect("the workflow finishes")
}

/// Scheduled commands in an instance's stored history.
async fn scheduled(s: &Setup, id: &str) -> usize {
    let stored = s
        .store
        .load(&WorkflowId::new(id), true)
        .await
        .unwrap()
        .expect("the instance is stored");
    stored
        .history
        .iter()
        .filter(|e| matches!(e, infinitic::HistoryEvent::Scheduled(_)))
        .count()
}

const DEPTH_LIMIT: &str = "depth limit of 128 levels (max_depth)";
const SIZE_LIMIT: &str = "payload size limit of 4194304 bytes (max_payload_bytes)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_service_argument_is_invalid_and_nothing_is_sent() {
    let s = setup();
    let result = run(&s, "deep", Case::Deep(DEEP)).await.unwrap();
    assert!(result.starts_with("Invalid"), "{result}");
    assert!(
        result.contains("cannot encode arguments of Sink::take"),
        "{result}"
    );
    assert!(result.contains(DEPTH_LIMIT), "{result}");
    assert_eq!(scheduled(&s, "deep").await, 0, "nothing was recorded");
    assert!(
        dead_letters::reasons(&s.store).await.is_empty(),
        "nothing was sent"
    );
    // The worker survived, and a value within the limit goes through (one level for the
    // argument tuple, one per node).
    assert_eq!(run(&s, "fits", Case::Deep(127)).await.unwrap(), "ok 127");
    let result = run(&s, "over", Case::Deep(128)).await.unwrap();
    assert!(result.contains(DEPTH_LIMIT), "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_child_workflow_argument_is_invalid() {
    let s = setup();
    let result = run(&s, "deep-child", Case::DeepChild(DEEP)).await.unwrap();
    assert!(result.starts_with("Invalid"), "{result}");
    assert!(result.contains(DEPTH_LIMIT), "{result}");
    assert_eq!(scheduled(&s, "deep-child").await, 0);
    assert_eq!(run(&s, "child", Case::DeepChild(3)).await.unwrap(), "ok 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_task_arguments_received_are_dead_lettered_and_the_workflow_told() {
    let s = setup();
    let handle = s
        .client
        .dispatch_with_id("waits", HostileStub.run(Case::Ghost))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handle.status().await.unwrap(), WorkflowState::Running);
    // A task for the waiting step, from a sender that did not check: 20,000 levels.
    let task = CommandId::new(WorkflowId::new("waits"), MethodRun(0), 0);
    let message = encode_message(&Message::ExecuteTask {
        task: task.clone(),
        workflow: "Hostile".into(),
        service: "Sink".into(),
        method: "take".into(),
        args: nest_args(DEEP as usize),
        attempt: 1,
    });
    s.store
        .publish(vec![raw("service:Sink", &task.to_string(), message)])
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), handle.result())
        .await
        .unwrap()
        .unwrap();
    assert!(result.starts_with("Invalid"), "{result}");
    assert!(result.contains(DEPTH_LIMIT), "{result}");
    let reasons = dead_letters::reasons(&s.store).await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("arguments of Sink::take refused")
            && reasons[0].contains(DEPTH_LIMIT),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_raw_bytes_are_dead_lettered_and_the_worker_keeps_serving() {
    let s = setup();
    let mut deep_envelope = vec![MAGIC, PROTOCOL_VERSION];
    deep_envelope.extend(nest_bytes(DEEP as usize));
    let deep_start = encode_message(&Message::StartWorkflow {
        workflow_id: WorkflowId::new("deep-start"),
        generation: infinitic::Generation::FIRST,
        workflow: "Hostile".into(),
        method: "keep".into(),
        input: nest_args(DEEP as usize),
        parent: None,
        pending: false,
        reply_to: None,
    });
    let deep_result = encode_message(&Message::CommandCompleted {
        command: CommandId::new(WorkflowId::new("nobody"), MethodRun(0), 0),
        outcome: infinitic::StepOutcome::Completed(nest_bytes(DEEP as usize)),
        at: Timestamp::from_millis(0),
    });
    s.store
        .publish(vec![
            raw("workflow:Hostile", "a", deep_envelope.clone()),
            raw("service:Sink", "b", deep_envelope),
            raw("workflow:Hostile", "deep-start", deep_start),
            raw("workflow:Hostile", "nobody", deep_result),
        ])
        .await
        .unwrap();
    let reasons = dead_letters::wait_for(&s.store, 4).await;
    let envelope_limit = "the message nests deeper than 32 levels (MAX_ENVELOPE_DEPTH)";
    for queue in ["workflow", "task"] {
        let expected = format!("undecodable {queue} message: {envelope_limit}");
        assert!(reasons.contains(&expected), "{reasons:?}");
    }
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("arguments of `Hostile::keep`") && r.contains(DEPTH_LIMIT)),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("step's result is refused") && r.contains(DEPTH_LIMIT)),
        "{reasons:?}"
    );
    match s
        .client
        .status(&WorkflowId::new("deep-start"))
        .await
        .unwrap()
    {
        Some(WorkflowState::Failed(reason)) => assert!(reason.contains(DEPTH_LIMIT), "{reason}"),
        other => panic!("the start failed with a reason: {other:?}"),
    }
    // Still serving.
    assert_eq!(run(&s, "after", Case::Deep(3)).await.unwrap(), "ok 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_start_arguments_over_a_limit_are_refused_and_nothing_stored() {
    let s = setup();
    let refused = s
        .client
        .dispatch_with_id("too-deep", HostileStub.keep(Nest::new(DEEP)))
        .await
        .map(|_| ());
    assert!(
        matches!(
            refused,
            Err(ClientError::Limit(LimitError::TooDeep { limit: 128 }))
        ),
        "{refused:?}"
    );
    let refused = s
        .client
        .dispatch_with_id("too-big", HostileStub.measure(vec![1; FIVE_MIB as usize]))
        .await
        .map(|_| ());
    let error = refused.unwrap_err();
    assert!(
        matches!(error, ClientError::Limit(LimitError::TooLarge { .. })),
        "{error:?}"
    );
    assert!(error.to_string().contains(SIZE_LIMIT), "{error}");
    for id in ["too-deep", "too-big"] {
        assert_eq!(s.client.status(&WorkflowId::new(id)).await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_the_size_limit_are_invalid_steps_or_a_parked_run() {
    let s = setup();
    // An argument from a workflow: refused before anything is recorded.
    let result = run(&s, "big-arg", Case::Big(FIVE_MIB)).await.unwrap();
    assert!(result.starts_with("Invalid"), "{result}");
    assert!(result.contains(SIZE_LIMIT), "{result}");
    assert_eq!(scheduled(&s, "big-arg").await, 0);
    assert!(dead_letters::reasons(&s.store).await.is_empty());

    // A service result: the service worker refuses to send it, tells the workflow.
    let result = run(&s, "big-result", Case::BigResult(FIVE_MIB))
        .await
        .unwrap();
    assert!(result.starts_with("Invalid"), "{result}");
    assert!(result.contains(SIZE_LIMIT), "{result}");
    let reasons = dead_letters::reasons(&s.store).await;
    assert!(
        reasons.len() == 1 && reasons[0].contains(SIZE_LIMIT),
        "{reasons:?}"
    );

    // A workflow output: the run is parked with the reason, not completed.
    let error = run(&s, "big-output", Case::BigOutput(FIVE_MIB))
        .await
        .unwrap_err();
    match &error {
        ClientError::Parked { reason, .. } => {
            assert!(reason.contains("result cannot be encoded"), "{reason}");
            assert!(reason.contains(SIZE_LIMIT), "{reason}");
        }
        other => panic!("expected a parked run, got {other:?}"),
    }

    // Just under the limit is fine.
    assert_eq!(
        run(&s, "fits", Case::BigResult(4 * 1024 * 1024 - 16))
            .await
            .unwrap(),
        format!("ok {}", 4 * 1024 * 1024 - 16)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_apply_to_workers_and_clients() {
    let store = SqliteStore::open_with(":memory:", OpenMode::CreateIfMissing, Durability::InMemory)
        .unwrap();
    let limits = Limits {
        max_payload_bytes: 1000,
        max_depth: 8,
    };
    let _worker = Worker::new(store.clone())
        .service(SinkDispatcher::new(SinkImpl))
        .workflow(HostileImpl::default)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(5),
            limits,
            ..WorkerConfig::default()
        })
        .start();
    let client = Client::new(store.clone()).with_limits(limits);
    let result = client.run(HostileStub.run(Case::Deep(8))).await.unwrap();
    assert!(result.contains("depth limit of 8 levels"), "{result}");
    assert_eq!(
        client.run(HostileStub.run(Case::Deep(7))).await.unwrap(),
        "ok 7"
    );
    let result = client.run(HostileStub.run(Case::Big(2000))).await.unwrap();
    assert!(result.contains("size limit of 1000 bytes"), "{result}");
    let refused = client
        .dispatch(HostileStub.keep(Nest::new(8)))
        .await
        .map(|_| ());
    assert!(
        matches!(
            refused,
            Err(ClientError::Limit(LimitError::TooDeep { limit: 8 }))
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_tester_applies_the_same_limits() {
    let tester = || WorkflowTester::new().service(SinkDispatcher::new(SinkImpl));
    let run = tester()
        .run(HostileImpl::default, HostileStub.run(Case::Deep(DEEP)))
        .await
        .unwrap();
    assert!(run.output.contains(DEPTH_LIMIT), "{}", run.output);
    let run = tester()
        .run(
            HostileImpl::default,
            HostileStub.run(Case::BigResult(FIVE_MIB)),
        )
        .await
        .unwrap();
    assert!(run.output.contains(SIZE_LIMIT), "{}", run.output);
    match tester()
        .run(
            HostileImpl::default,
            HostileStub.run(Case::BigOutput(FIVE_MIB)),
        )
        .await
    {
        Err(infinitic::TesterError::Parked { reason, .. }) => {
            assert!(reason.to_string().contains(SIZE_LIMIT), "{reason}")
        }
        other => panic!(
            "expected a parked run, got {:?}",
            other.map(|r| r.output.len())
        ),
    }
    let small = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    let run = tester()
        .limits(small)
        .run(HostileImpl::default, HostileStub.run(Case::Deep(4)))
        .await
        .unwrap();
    assert!(
        run.output.contains("depth limit of 4 levels"),
        "{}",
        run.output
    );
}

/// Messages a transport could never carry (a broker's size limit, below the payload limits):
/// refused before the commit that would record them. The step's events are kept, nothing of
/// it is sent, and the instance is parked with the reason; the outbox never holds a message
/// that cannot be published.
mod transport_size {
    use super::*;
    use infinitic::store::memory::MemoryStore;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[service]
    pub trait Archive {
        async fn store(&self, blob: Vec<u8>) -> usize;
    }

    #[derive(Clone, Default)]
    pub struct Counting(Arc<AtomicUsize>);

    impl Archive for Counting {
        async fn store(&self, blob: Vec<u8>) -> usize {
            self.0.fetch_add(1, Ordering::SeqCst);
            blob.len()
        }
    }

    #[workflow]
    pub trait Archiver {
        async fn run(&self, small: usize, big: usize) -> usize;
    }

    #[derive(Default)]
    pub struct ArchiverImpl {
        archive: ArchiveStub,
    }

    #[workflow]
    impl Archiver for ArchiverImpl {
        async fn run(&self, small: usize, big: usize) -> usize {
            let first = self.archive.store(vec![7; small]).await.unwrap_or(0);
            let second = self.archive.store(vec![7; big]).await.unwrap_or(0);
            first + second
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_whose_message_the_transport_cannot_carry_parks_before_its_commit() {
        let store = MemoryStore::with_max_message_bytes(2_000);
        let calls = Counting::default();
        let worker = Worker::new(store.clone())
            .workflow(ArchiverImpl::default)
            .service(ArchiveDispatcher::new(calls.clone()))
            .config(WorkerConfig {
                poll_interval: Duration::from_millis(5),
                ..WorkerConfig::default()
            })
            .start();
        let client = Client::new(store.clone());
        let id = WorkflowId::new("archiver");
        client
            .dispatch_with_id(id.clone(), ArchiverStub.run(100, 5_000))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let reason = loop {
            if let Some(WorkflowState::Parked(reason)) = client.status(&id).await.unwrap() {
                break reason;
            }
            assert!(Instant::now() < deadline, "should park");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            reason.contains("over the transport's limit of 2000 bytes"),
            "{reason}"
        );
        assert!(reason.contains("service:Archive"), "{reason}");
        // The small call ran; the big one was never sent, and the first call's outcome is
        // recorded (nothing received was lost).
        assert_eq!(calls.0.load(Ordering::SeqCst), 1);
        let stored = store.load(&id, true).await.unwrap().unwrap();
        assert_eq!(
            stored
                .history
                .iter()
                .filter(|e| matches!(e, infinitic::HistoryEvent::Completed(_)))
                .count(),
            1
        );
        // Publishing such a message directly is refused too, with the sizes.
        let refused = store
            .publish(vec![raw("service:Archive", "k", vec![0; 3_000])])
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("2000"), "{refused}");
        worker.shutdown().await;
    }
}
