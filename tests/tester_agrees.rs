//! One semantics: `WorkflowTester` and the embedded runtime agree. Each workflow here runs on
//! both and what they return (or what they wait on) is compared:
//! - a child's id (so its deterministic randomness), and the typed failure of a child started
//!   with arguments it cannot decode;
//! - a slow child raced against the parent's own timer: the earlier one wins on both;
//! - retries by the same policy: the attempt that succeeds, and the attempts counted when none
//!   does;
//! - a call to a service no worker serves waits, visibly, and a `select2` against a timer ends
//!   the wait;
//! - a parent waiting on a parked child keeps waiting, and its status says why;
//! - a child workflow that returns `Err` completes, and its parent gets the error as a value.

#[path = "support/both.rs"]
mod both;

use both::{waited_on, Runtime};
use infinitic::prelude::*;
use infinitic::status::{Description, Waiting};
use infinitic::store::memory::MemoryStore;
use infinitic::{
    Client, RetryPolicy, TesterError, Worker, WorkerConfig, WorkflowState, WorkflowTester,
};
use serde::{Deserialize, Serialize};
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

// ------------------------------------------------------------------------------------------
// The embedded runtime, as the tester's counterpart
// ------------------------------------------------------------------------------------------

/// Retries fast enough for a test on the wall clock; the tester waits them on its virtual one.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_delay: Duration::from_millis(20),
        multiplier: 1.0,
        max_delay: Duration::from_millis(20),
        jitter: 0.0,
    }
}

/// Every workflow and service of this file, registered on `worker`.
fn everything(worker: Worker<MemoryStore>) -> Worker<MemoryStore> {
    worker
        .workflow(RacerImpl::default)
        .workflow(SlowImpl::default)
        .workflow(PersistentImpl::default)
        .workflow(BoundedImpl::default)
        .workflow(StuckImpl::default)
        .workflow(GuardianImpl::default)
        .workflow(FragileImpl::default)
        .workflow(AskerImpl::default)
        .workflow(CheckerImpl::default)
        .service(FlakyDispatcher::new(FlakyImpl))
}

/// Every workflow and service of this file, registered on `tester`.
fn tester() -> WorkflowTester {
    WorkflowTester::new()
        .retry(quick_retries())
        .child_workflow(SlowImpl::default)
        .child_workflow(FragileImpl::default)
        .child_workflow(CheckerImpl::default)
        .service(FlakyDispatcher::new(FlakyImpl))
}

/// The tester's description of a run that waits with nothing due.
fn tester_waits<R: std::fmt::Debug>(result: Result<R, TesterError>) -> Description {
    match result {
        Err(TesterError::Waiting { description, .. }) => *description,
        other => panic!("the tested run should wait, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// A slow child against the parent's own timer
// ------------------------------------------------------------------------------------------

#[workflow]
pub trait Slow {
    async fn run(&self, millis: u64) -> u64;
}

#[derive(Default)]
pub struct SlowImpl;

#[workflow]
impl Slow for SlowImpl {
    async fn run(&self, millis: u64) -> u64 {
        workflow::sleep(Duration::from_millis(millis)).await;
        millis
    }
}

#[workflow]
pub trait Racer {
    /// Races a child that sleeps `child_millis` against a timer of `timer_millis`.
    async fn run(&self, child_millis: u64, timer_millis: u64) -> String;
}

#[derive(Default)]
pub struct RacerImpl {
    slow: SlowStub,
}

#[workflow]
impl Racer for RacerImpl {
    async fn run(&self, child_millis: u64, timer_millis: u64) -> String {
        let child = self.slow.run(child_millis);
        let timer = workflow::sleep(Duration::from_millis(timer_millis));
        match workflow::select2(child, timer).await {
            workflow::Either::Left(_) => "child".into(),
            workflow::Either::Right(()) => "timer".into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_child_loses_to_the_parents_timer_on_both_and_a_fast_one_wins() {
    let runtime = Runtime::start(everything, quick_retries());
    for (child, timer, winner) in [(5_000, 100, "timer"), (50, 5_000, "child")] {
        let tested = tester()
            .run(RacerImpl::default, RacerStub.run(child, timer))
            .await
            .unwrap();
        let id = format!("race-{child}-{timer}");
        let run = runtime.run(&id, RacerStub.run(child, timer)).await;
        assert_eq!((tested.output.as_str(), run.as_str()), (winner, winner));
        assert_eq!(
            tested.elapsed,
            Duration::from_millis(child.min(timer)),
            "the tester's clock moves to the winner, no further"
        );
    }
    runtime.stop().await;
}

// ------------------------------------------------------------------------------------------
// Retries
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlakyError(u32);

#[service]
pub trait Flaky {
    /// Fails until attempt `succeed_at`, then returns the attempt.
    async fn attempt(&self, succeed_at: u32) -> Result<u32, FlakyError>;
}

pub struct FlakyImpl;

impl Flaky for FlakyImpl {
    async fn attempt(&self, succeed_at: u32) -> Result<u32, FlakyError> {
        let attempt = infinitic::task::current().expect("in a task").attempt;
        if attempt >= succeed_at {
            Ok(attempt)
        } else {
            Err(FlakyError(attempt))
        }
    }
}

type Flaked = Result<u32, StepError<FlakyError>>;

#[workflow]
pub trait Persistent {
    async fn run(&self) -> (Flaked, Flaked);
}

#[derive(Default)]
pub struct PersistentImpl {
    flaky: FlakyStub,
}

#[workflow]
impl Persistent for PersistentImpl {
    async fn run(&self) -> (Flaked, Flaked) {
        (self.flaky.attempt(3).await, self.flaky.attempt(99).await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_same_policy_on_both() {
    let tested = tester()
        .run(PersistentImpl::default, PersistentStub.run())
        .await
        .unwrap();
    let runtime = Runtime::start(everything, quick_retries());
    let run = runtime.run("persistent", PersistentStub.run()).await;
    runtime.stop().await;
    let expected = (
        Ok(3),
        Err(StepError::Failed {
            error: FlakyError(4),
            attempts: 4,
        }),
    );
    assert_eq!(tested.output, expected);
    assert_eq!(run, expected);
    // Two retries, then three: 20 ms each on the virtual clock.
    assert_eq!(tested.elapsed, Duration::from_millis(5 * 20));
}

// ------------------------------------------------------------------------------------------
// A service no worker serves
// ------------------------------------------------------------------------------------------

/// A service no worker (and no tester) serves.
#[service]
pub trait Ghost {
    async fn call(&self, n: u64) -> u64;
}

#[workflow]
pub trait Bounded {
    /// Calls the ghost service, giving up after `millis`.
    async fn run(&self, millis: u64) -> String;
}

#[derive(Default)]
pub struct BoundedImpl {
    ghost: GhostStub,
}

#[workflow]
impl Bounded for BoundedImpl {
    async fn run(&self, millis: u64) -> String {
        let call = self.ghost.call(1);
        match workflow::select2(call, workflow::sleep(Duration::from_millis(millis))).await {
            workflow::Either::Left(answer) => format!("answered {answer:?}"),
            workflow::Either::Right(()) => "gave up".into(),
        }
    }
}

#[workflow]
pub trait Stuck {
    async fn run(&self) -> u64;
}

#[derive(Default)]
pub struct StuckImpl {
    ghost: GhostStub,
}

#[workflow]
impl Stuck for StuckImpl {
    async fn run(&self) -> u64 {
        self.ghost.call(7).await.unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_no_worker_serves_waits_visibly_on_both_and_a_timer_bounds_it() {
    let runtime = Runtime::start(everything, quick_retries());

    let tested = tester_waits(
        tester()
            .with_id("stuck")
            .run(StuckImpl::default, StuckStub.run())
            .await,
    );
    let run = runtime
        .waiting("stuck", StuckStub.run(), |d| !d.waiting_on.is_empty())
        .await;
    assert_eq!(
        (&tested.state, &run.state),
        (&WorkflowState::Running, &WorkflowState::Running)
    );
    assert_eq!(waited_on(&tested), waited_on(&run));
    assert_eq!(
        waited_on(&run),
        vec![(
            "stuck/0/0".to_string(),
            Waiting::Call {
                service: "Ghost".into(),
                method: "call".into()
            }
        )]
    );

    let tested = tester()
        .run(BoundedImpl::default, BoundedStub.run(100))
        .await
        .unwrap();
    let run = runtime.run("bounded", BoundedStub.run(100)).await;
    assert_eq!(
        (tested.output.as_str(), run.as_str()),
        ("gave up", "gave up")
    );
    assert_eq!(tested.elapsed, Duration::from_millis(100));
    runtime.stop().await;
}

// ------------------------------------------------------------------------------------------
// A parked child
// ------------------------------------------------------------------------------------------

#[workflow]
pub trait Fragile {
    async fn run(&self) -> u64;
}

#[derive(Default)]
pub struct FragileImpl;

#[workflow]
impl Fragile for FragileImpl {
    async fn run(&self) -> u64 {
        panic!("a bug in the child")
    }
}

#[workflow]
pub trait Guardian {
    async fn run(&self) -> u64;
}

#[derive(Default)]
pub struct GuardianImpl {
    fragile: FragileStub,
}

#[workflow]
impl Guardian for GuardianImpl {
    async fn run(&self) -> u64 {
        self.fragile.run().await.unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_of_a_parked_child_waits_visibly_on_both() {
    let tested = tester_waits(
        tester()
            .with_id("guardian")
            .run(GuardianImpl::default, GuardianStub.run())
            .await,
    );
    let runtime = Runtime::start(everything, quick_retries());
    let run = runtime
        .waiting("guardian", GuardianStub.run(), |d| {
            d.waiting_on.iter().any(|w| {
                matches!(
                    w.what,
                    Waiting::Child {
                        state: Some(WorkflowState::Parked(_)),
                        ..
                    }
                )
            })
        })
        .await;
    runtime.stop().await;
    assert_eq!(waited_on(&tested), waited_on(&run));
    let waited = waited_on(&run);
    let [(command, Waiting::Child { state, .. })] = waited.as_slice() else {
        panic!("{run}");
    };
    assert_eq!(command, "guardian/0/0");
    let Some(WorkflowState::Parked(reason)) = state else {
        panic!("{run}");
    };
    assert!(reason.contains("a bug in the child"), "{reason}");
    assert!(
        tested.to_string().contains("a bug in the child"),
        "{tested}"
    );
}

// ------------------------------------------------------------------------------------------
// A child that returns `Err`
// ------------------------------------------------------------------------------------------

#[workflow]
pub trait Checker {
    /// `Err` for an odd `n`.
    async fn check(&self, n: u64) -> Result<u64, String>;
}

#[derive(Default)]
pub struct CheckerImpl;

#[workflow]
impl Checker for CheckerImpl {
    async fn check(&self, n: u64) -> Result<u64, String> {
        if n % 2 == 1 {
            return Err(format!("{n} is odd"));
        }
        Ok(n / 2)
    }
}

#[workflow]
pub trait Asker {
    async fn run(&self) -> Vec<Result<Result<u64, String>, StepError<NoError>>>;
}

#[derive(Default)]
pub struct AskerImpl {
    checker: CheckerStub,
}

#[workflow]
impl Asker for AskerImpl {
    async fn run(&self) -> Vec<Result<Result<u64, String>, StepError<NoError>>> {
        vec![self.checker.check(4).await, self.checker.check(3).await]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_returns_err_completes_and_its_parent_gets_the_error_as_a_value() {
    let tested = tester()
        .run(AskerImpl::default, AskerStub.run())
        .await
        .unwrap();
    let runtime = Runtime::start(everything, quick_retries());
    let run = runtime.run("asker", AskerStub.run()).await;
    runtime.stop().await;
    let expected = vec![Ok(Ok(2)), Ok(Err("3 is odd".to_string()))];
    assert_eq!(tested.output, expected);
    assert_eq!(run, expected);
}
