//! Workflow code: when a call starts (when awaited, or now with `dispatch`), fire and forget,
//! asking whether a dispatched call has completed, and n-ary `join` / `race` over branches of
//! different types. Each workflow runs on the `WorkflowTester` and on the embedded runtime, and
//! each recorded history replays cold to the same result.

#[path = "support/both.rs"]
mod both;

use both::Runtime;
use infinitic::prelude::*;
use infinitic::store::memory::MemoryStore;
use infinitic::workflow::{OneOf3, OneOf4};
use infinitic::{
    decode, replay, Command, History, HistoryEvent, RetryPolicy, Status, Worker, WorkflowFactory,
};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How many times inline steps' closures ran, in this test binary.
static INLINE_RUNS: AtomicUsize = AtomicUsize::new(0);
use std::time::Duration;

#[service]
pub trait Notes {
    /// Records `note` and returns it in capitals (whatever order calls run in).
    async fn write(&self, note: String) -> String;
}

/// Shared by the tester's and the runtime's service.
#[derive(Clone, Default)]
pub struct Notebook(Arc<Mutex<Vec<String>>>);

impl Notes for Notebook {
    async fn write(&self, note: String) -> String {
        let capitals = note.to_uppercase();
        self.0.lock().unwrap().push(note);
        capitals
    }
}

/// A service no worker serves: a branch that never finishes.
#[service]
pub trait Ghost {
    async fn call(&self) -> u64;
}

#[workflow]
pub trait Square {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct SquareImpl;

#[workflow]
impl Square for SquareImpl {
    async fn run(&self, n: u64) -> u64 {
        n * n
    }
}

#[workflow]
pub trait Calls {
    /// A call bound to a variable is sent when it is awaited: "b" gets position 0.
    async fn deferred(&self) -> (String, String);
    /// A dispatched call is sent at once: "a" gets position 0.
    async fn dispatched(&self) -> (String, String);
    /// Whether a dispatched call has completed, before and after a timer.
    async fn completed(&self) -> (bool, bool, String);
    /// Fire and forget a call and a child, and return at once.
    async fn detached(&self) -> String;
    /// Joins four branches of four types.
    async fn joined(&self) -> (String, u64, (), String);
    /// Races three branches: a call nobody serves, a short timer, a long one.
    async fn raced(&self) -> OneOf3<u64, (), ()>;
    /// Three inline steps around a timer: a draw, the wall clock, and a workflow operation
    /// used where it must not be.
    async fn inlined(&self, misuse: bool) -> (u64, u64);
    /// Races a call against a timer, returning which won (serializable).
    async fn race_won(&self) -> OneOf4<String, (), (), ()>;
}

#[derive(Default)]
pub struct CallsImpl {
    notes: NotesStub,
    ghost: GhostStub,
    square: SquareStub,
}

#[workflow]
impl Calls for CallsImpl {
    async fn deferred(&self) -> (String, String) {
        let a = self.notes.write("a".into());
        let b = self.notes.write("b".into()).await.unwrap_or_default();
        (a.await.unwrap_or_default(), b)
    }

    async fn dispatched(&self) -> (String, String) {
        let a = self.notes.write("a".into()).dispatch();
        let b = self.notes.write("b".into()).await.unwrap_or_default();
        (a.await.unwrap_or_default(), b)
    }

    async fn completed(&self) -> (bool, bool, String) {
        let call = self.notes.write("slowly".into()).dispatch();
        let before = call.is_completed();
        workflow::sleep(Duration::from_secs(1)).await;
        let after = call.is_completed();
        (before, after, call.await.unwrap_or_default())
    }

    async fn detached(&self) -> String {
        self.notes.write("forgotten".into()).dispatch_detached();
        self.square.run(3).dispatch_detached();
        "returned".into()
    }

    async fn joined(&self) -> (String, u64, (), String) {
        let (a, b, c, d) = workflow::join((
            self.notes.write("x".into()),
            self.square.run(4),
            workflow::sleep(Duration::from_millis(50)),
            self.notes.write("y".into()).dispatch(),
        ))
        .await;
        (
            a.unwrap_or_default(),
            b.unwrap_or(0),
            c,
            d.unwrap_or_default(),
        )
    }

    async fn raced(&self) -> OneOf3<u64, (), ()> {
        let winner = workflow::race((
            self.ghost.call(),
            workflow::sleep(Duration::from_millis(100)),
            workflow::sleep(Duration::from_secs(10)),
        ))
        .await;
        match winner {
            OneOf3::First(answer) => OneOf3::First(answer.unwrap_or(0)),
            OneOf3::Second(()) => OneOf3::Second(()),
            OneOf3::Third(()) => OneOf3::Third(()),
        }
    }

    async fn inlined(&self, misuse: bool) -> (u64, u64) {
        let draw: u64 = workflow::inline(|| {
            INLINE_RUNS.fetch_add(1, Ordering::SeqCst);
            // Not deterministic at all: a fresh hasher's random keys.
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        });
        workflow::sleep(Duration::from_millis(10)).await;
        let nanos: u64 = workflow::inline(|| {
            INLINE_RUNS.fetch_add(1, Ordering::SeqCst);
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos().into())
        });
        if misuse {
            // The workflow's own draws inside an inline step would not be replayed.
            let _: u64 = workflow::inline(workflow::random);
        }
        (draw, nanos)
    }

    async fn race_won(&self) -> OneOf4<String, (), (), ()> {
        let winner = workflow::race((
            self.notes.write("fast".into()),
            workflow::sleep(Duration::from_secs(5)),
            workflow::sleep(Duration::from_secs(6)),
            workflow::sleep(Duration::from_secs(7)),
        ))
        .await;
        match winner {
            OneOf4::First(n) => OneOf4::First(n.unwrap_or_default()),
            OneOf4::Second(()) => OneOf4::Second(()),
            OneOf4::Third(()) => OneOf4::Third(()),
            OneOf4::Fourth(()) => OneOf4::Fourth(()),
        }
    }
}

fn register(notes: Notebook) -> impl FnOnce(Worker<MemoryStore>) -> Worker<MemoryStore> {
    move |worker| {
        worker
            .workflow(CallsImpl::default)
            .workflow(SquareImpl::default)
            .service(NotesDispatcher::new(notes))
    }
}

/// Replays `history` cold and returns the output it completes with.
fn replayed<R: DeserializeOwned>(history: &History) -> R {
    let cold = replay(&WorkflowFactory::new(CallsImpl::default), history).unwrap();
    let Status::Completed(output) = cold.status else {
        panic!(
            "the history should replay to completion, got {:?}",
            cold.status
        );
    };
    decode(&output).unwrap()
}

/// The note each scheduled call writes, by position.
fn notes_by_position(history: &History) -> Vec<String> {
    history
        .scheduled()
        .filter_map(|record| match &record.command {
            Command::CallService { args, .. } => decode::<(String,)>(args).ok().map(|a| a.0),
            _ => None,
        })
        .collect()
}

/// Runs `call` (built twice by `make`) on the tester and on the runtime; checks both agree
/// and both histories replay to the same output; returns the output and the tester's history.
async fn on_both<R>(
    id: &str,
    make: impl Fn() -> infinitic::WorkflowCall<R>,
) -> (R, History, Notebook)
where
    R: DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let tested = WorkflowTester::new()
        .with_id(id)
        .child_workflow(SquareImpl::default)
        .service(NotesDispatcher::new(Notebook::default()))
        .run(CallsImpl::default, make())
        .await
        .unwrap();
    let notes = Notebook::default();
    let runtime = Runtime::start(register(notes.clone()), RetryPolicy::default());
    let output: R = runtime.run(id, make()).await;
    let history = runtime.history(id).await;
    runtime.stop().await;
    assert_eq!(tested.output, output, "the tester and the runtime agree");
    assert_eq!(replayed::<R>(&tested.history), output);
    assert_eq!(replayed::<R>(&history), output);
    (output, tested.history, notes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_bound_to_a_variable_starts_when_awaited_and_dispatch_starts_it_now() {
    let (output, history, _) = on_both("deferred", || CallsStub.deferred()).await;
    assert_eq!(output, ("A".to_string(), "B".to_string()));
    assert_eq!(notes_by_position(&history), vec!["b", "a"]);
    let (_, history, _) = on_both("dispatched", || CallsStub.dispatched()).await;
    assert_eq!(notes_by_position(&history), vec!["a", "b"]);
    // Both sent by the first step.
    assert!(matches!(
        &history.events[..2],
        [HistoryEvent::Scheduled(_), HistoryEvent::Scheduled(_)]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whether_a_dispatched_call_completed_is_read_from_history() {
    let ((before, after, count), _, _) = on_both("completed", || CallsStub.completed()).await;
    assert_eq!((before, after, count.as_str()), (false, true, "SLOWLY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_calls_and_children_run_though_nobody_waits_for_them() {
    let tester_notes = Notebook::default();
    let tested = WorkflowTester::new()
        .child_workflow(SquareImpl::default)
        .service(NotesDispatcher::new(tester_notes.clone()))
        .run(CallsImpl::default, CallsStub.detached())
        .await
        .unwrap();
    assert_eq!(tested.output, "returned");
    // The tester runs what is due when the workflow returns (the clock stops there).
    assert_eq!(*tester_notes.0.lock().unwrap(), ["forgotten"]);
    let kinds: Vec<&str> = tested
        .history
        .scheduled()
        .map(|r| match r.command {
            Command::CallService { .. } => "call",
            Command::StartChild { .. } => "child",
            Command::StartTimer { .. } => "timer",
            Command::Inline { .. } => "inline",
            Command::Receive { .. } | Command::SendSignal { .. } => "signal",
        })
        .collect();
    assert_eq!(kinds, vec!["call", "child"]);
    assert_eq!(tested.history.completions().count(), 0, "nothing awaited");

    let notes = Notebook::default();
    let runtime = Runtime::start(register(notes.clone()), RetryPolicy::default());
    assert_eq!(
        runtime.run("detached", CallsStub.detached()).await,
        "returned"
    );
    // The call runs, and the child completes, after the parent returned.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let child = runtime.client.status(&"detached/0/1".into()).await.unwrap();
        let written = notes.0.lock().unwrap().clone();
        if written == ["forgotten"] && child.as_ref().is_some_and(|s| s.is_final()) {
            assert_eq!(
                child,
                Some(infinitic::WorkflowState::Completed(
                    infinitic::encode(&9u64).unwrap()
                ))
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{written:?} {child:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_race_take_branches_of_different_types() {
    let (joined, history, _) = on_both("joined", || CallsStub.joined()).await;
    assert_eq!(joined, ("X".to_string(), 16, (), "Y".to_string()));
    assert_eq!(
        history.scheduled().count(),
        4,
        "all four branches sent at once"
    );

    let (raced, _, _) = on_both("raced", || CallsStub.raced()).await;
    assert_eq!(raced, OneOf3::Second(()));
    let (won, _, _) = on_both("race-won", || CallsStub.race_won()).await;
    assert_eq!(won, OneOf4::First("FAST".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_awaited_with_a_timeout_says_the_instance_goes_on() {
    // A worker that does not serve `Ghost`: `raced` waits 100 ms on its timer.
    let runtime = Runtime::start(register(Notebook::default()), RetryPolicy::default());
    let handle = runtime
        .client
        .dispatch_with_id("patient", CallsStub.raced())
        .await
        .unwrap();
    match handle.result_within(Duration::from_millis(1)).await {
        Err(ClientError::TimedOut { id, waited }) => {
            assert_eq!((id.as_str(), waited), ("patient", Duration::from_millis(1)));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let won = handle.result_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(won, OneOf3::Second(()));
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_step_runs_once_and_replays_its_recorded_value() {
    let tested = WorkflowTester::new()
        .run(CallsImpl::default, CallsStub.inlined(false))
        .await
        .unwrap();
    let runs = INLINE_RUNS.load(Ordering::SeqCst);
    // Replayed cold: the recorded values come back, the closures do not run.
    assert_eq!(replayed::<(u64, u64)>(&tested.history), tested.output);
    assert_eq!(INLINE_RUNS.load(Ordering::SeqCst), runs);
    // What history holds is what replay returns.
    let mut edited = tested.history.clone();
    for event in &mut edited.events {
        if let HistoryEvent::Scheduled(record) = event {
            if let Command::Inline { value } = &mut record.command {
                *value = infinitic::encode(&7u64).unwrap();
            }
        }
    }
    assert_eq!(replayed::<(u64, u64)>(&edited), (7, 7));
    // Recorded as settled steps: nothing is waited on or sent for them.
    let kinds: Vec<bool> = tested
        .history
        .scheduled()
        .map(|r| r.command.is_settled_at_once())
        .collect();
    assert_eq!(kinds, vec![true, false, true]);

    // On the runtime: the same shape, and its stored history replays to its output.
    let runtime = Runtime::start(register(Notebook::default()), RetryPolicy::default());
    let output: (u64, u64) = runtime.run("inlined", CallsStub.inlined(false)).await;
    let history = runtime.history("inlined").await;
    runtime.stop().await;
    assert_eq!(replayed::<(u64, u64)>(&history), output);
    assert_eq!(history.scheduled().count(), 3);
}

#[tokio::test]
async fn a_workflow_operation_inside_an_inline_step_parks_the_run() {
    let result = WorkflowTester::new()
        .run(CallsImpl::default, CallsStub.inlined(true))
        .await;
    let Err(infinitic::TesterError::Parked { reason, .. }) = result else {
        panic!("should park, got {result:?}");
    };
    assert!(
        reason.to_string().contains("outside a running workflow"),
        "{reason}"
    );
}
