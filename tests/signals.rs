//! Signals: channels declared on the workflow trait, sent to by clients and other workflows,
//! received (one, up to N, filtered by variant and fields, raced against a timer), buffered
//! when nobody waits (bounded: overflow is a dead letter with the reason), applied once, shown
//! in the status, and replayed identically. Each case runs on the `WorkflowTester` and on the
//! embedded runtime.

#[path = "support/both.rs"]
mod both;

use both::Runtime;
use infinitic::prelude::*;
use infinitic::status::Waiting;
use infinitic::store::memory::MemoryStore;
use infinitic::{
    decode, replay, HistoryEvent, Status, Transport, Worker, WorkflowFactory, WorkflowId,
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Approved { by: String, amount: u64 },
    Rejected { by: String },
}

fn approved(by: &str, amount: u64) -> Decision {
    Decision::Approved {
        by: by.into(),
        amount,
    }
}

fn rejected(by: &str) -> Decision {
    Decision::Rejected { by: by.into() }
}

#[workflow]
pub trait Approval {
    /// Waits `wait_ms`, then takes the first approval of at least 100 (whatever else is
    /// buffered), then up to 5 more decisions, then a note or a 1 s timeout.
    async fn run(&self, wait_ms: u64) -> (Decision, Vec<Decision>, Option<String>, bool);
    /// Waits `wait_ms` and returns whatever decision comes first, or nothing after 1 s.
    async fn first_or_timeout(&self, wait_ms: u64) -> Option<Decision>;

    /// Decisions, at most 3 waiting at a time.
    #[channel(capacity = 3)]
    fn decisions(&self) -> Channel<Decision>;

    /// Free-form notes.
    #[channel]
    fn notes(&self) -> Channel<String>;
}

#[derive(Default)]
pub struct ApprovalImpl;

#[workflow]
impl Approval for ApprovalImpl {
    async fn run(&self, wait_ms: u64) -> (Decision, Vec<Decision>, Option<String>, bool) {
        workflow::sleep(Duration::from_millis(wait_ms)).await;
        let big = Filter::variant("Approved").and(Filter::field("Approved.amount").ge(100));
        let first = self.decisions().filtered(big).receive().await;
        let rest = self.decisions().receive_up_to(5).await;
        let note_waiting = self.notes().is_buffered();
        let note = match workflow::select2(
            self.notes().receive(),
            workflow::sleep(Duration::from_secs(1)),
        )
        .await
        {
            workflow::Either::Left(note) => Some(note),
            workflow::Either::Right(()) => None,
        };
        (first, rest, note, note_waiting)
    }

    async fn first_or_timeout(&self, wait_ms: u64) -> Option<Decision> {
        workflow::sleep(Duration::from_millis(wait_ms)).await;
        match workflow::race((
            self.decisions().receive(),
            workflow::sleep(Duration::from_secs(1)),
        ))
        .await
        {
            OneOf2::First(decision) => Some(decision),
            OneOf2::Second(()) => None,
        }
    }
}

/// Sends decisions to another instance's channel, then waits for its note.
#[workflow]
pub trait Manager {
    async fn run(&self, target: String) -> String;
    #[channel]
    fn replies(&self) -> Channel<String>;
}

#[derive(Default)]
pub struct ManagerImpl;

#[workflow]
impl Manager for ManagerImpl {
    async fn run(&self, target: String) -> String {
        workflow::signal(
            target.as_str(),
            ApprovalStub.decisions(),
            approved("boss", 900),
        )
        .expect("a small value");
        workflow::signal(target.as_str(), ApprovalStub.decisions(), rejected("boss"))
            .expect("a small value");
        self.replies().receive().await
    }
}

/// Parks on an unlucky number.
#[workflow]
pub trait Touchy {
    async fn run(&self) -> u64;
    #[channel]
    fn pokes(&self) -> Channel<u64>;
}

#[derive(Default)]
pub struct TouchyImpl;

#[workflow]
impl Touchy for TouchyImpl {
    async fn run(&self) -> u64 {
        let n = self.pokes().receive().await;
        assert_ne!(n, 13, "unlucky");
        n
    }
}

fn register(worker: Worker<MemoryStore>) -> Worker<MemoryStore> {
    worker
        .workflow(ApprovalImpl::default)
        .workflow(ManagerImpl::default)
        .workflow(TouchyImpl::default)
}

type Outcome = (Decision, Vec<Decision>, Option<String>, bool);

fn expected() -> Outcome {
    (
        approved("cy", 500),
        vec![rejected("ada"), approved("bo", 50)],
        Some("thanks".to_string()),
        true,
    )
}

/// Cold replay of a history gives `output`.
fn replays_to<R: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    history: &infinitic::History,
    output: &R,
) {
    let cold = replay(&WorkflowFactory::new(ApprovalImpl::default), history).unwrap();
    let Status::Completed(bytes) = cold.status else {
        panic!("should replay to completion: {:?}", cold.status);
    };
    assert_eq!(&decode::<R>(&bytes).unwrap(), output);
}

#[tokio::test]
async fn on_the_tester_signals_buffer_filter_and_replay() {
    let ms = Duration::from_millis;
    let run = WorkflowTester::new()
        .signal(ms(10), ApprovalStub.decisions(), rejected("ada"))
        .signal(ms(20), ApprovalStub.decisions(), approved("bo", 50))
        .signal(ms(30), ApprovalStub.decisions(), approved("cy", 500))
        .signal(ms(40), ApprovalStub.notes(), "thanks".to_string())
        .run(ApprovalImpl::default, ApprovalStub.run(100))
        .await
        .unwrap();
    assert_eq!(run.output, expected());
    replays_to(&run.history, &run.output);
    // All four were buffered (the code slept), then taken by the receives.
    let buffered = run.history.signals().filter(|s| s.to.is_none()).count();
    assert_eq!(buffered, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_runtime_the_same() {
    let runtime = Runtime::start(register, RetryPolicy::default());
    let client = &runtime.client;
    client
        .dispatch_with_id("approval", ApprovalStub.run(300))
        .await
        .unwrap();
    client
        .signal("approval", ApprovalStub.decisions(), rejected("ada"))
        .await
        .unwrap();
    client
        .signal("approval", ApprovalStub.decisions(), approved("bo", 50))
        .await
        .unwrap();
    client
        .signal("approval", ApprovalStub.decisions(), approved("cy", 500))
        .await
        .unwrap();
    client
        .signal("approval", ApprovalStub.notes(), "thanks".to_string())
        .await
        .unwrap();
    let output: Outcome = client
        .handle("approval")
        .result_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(output, expected());
    replays_to(&runtime.history("approval").await, &output);
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_raced_against_a_timer_ends_either_way() {
    let tested = WorkflowTester::new()
        .run(ApprovalImpl::default, ApprovalStub.first_or_timeout(0))
        .await
        .unwrap();
    assert_eq!(tested.output, None);
    assert_eq!(tested.elapsed, Duration::from_secs(1));
    let tested = WorkflowTester::new()
        .signal(
            Duration::from_millis(500),
            ApprovalStub.decisions(),
            rejected("ada"),
        )
        .run(ApprovalImpl::default, ApprovalStub.first_or_timeout(0))
        .await
        .unwrap();
    assert_eq!(tested.output, Some(rejected("ada")));
    // Taken by the waiting receive on arrival, not buffered.
    assert!(tested.history.signals().all(|s| s.to.is_some()));

    let runtime = Runtime::start(register, RetryPolicy::default());
    let none: Option<Decision> = runtime.run("alone", ApprovalStub.first_or_timeout(0)).await;
    assert_eq!(none, None);
    runtime
        .client
        .dispatch_with_id("answered", ApprovalStub.first_or_timeout(0))
        .await
        .unwrap();
    // Its status says what it waits on, once it does.
    let description = runtime
        .waiting("answered-status", ApprovalStub.first_or_timeout(0), |d| {
            d.waiting_on
                .iter()
                .any(|w| matches!(w.what, Waiting::Signal { .. }))
        })
        .await;
    assert!(
        description.to_string().contains("a signal on `decisions`"),
        "{description}"
    );
    runtime
        .client
        .signal("answered", ApprovalStub.decisions(), rejected("ada"))
        .await
        .unwrap();
    let some: Option<Decision> = runtime
        .client
        .handle("answered")
        .result_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(some, Some(rejected("ada")));
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_the_filter_and_the_buffered_signals() {
    let runtime = Runtime::start(register, RetryPolicy::default());
    let client = &runtime.client;
    client
        .dispatch_with_id("picky", ApprovalStub.run(0))
        .await
        .unwrap();
    client
        .signal("picky", ApprovalStub.decisions(), rejected("ada"))
        .await
        .unwrap();
    let id = WorkflowId::new("picky");
    let deadline = Instant::now() + Duration::from_secs(10);
    let description = loop {
        let description = client.describe(&id).await.unwrap().unwrap();
        if description.buffered.get("decisions") == Some(&1) {
            break description;
        }
        assert!(Instant::now() < deadline, "{description}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let text = description.to_string();
    assert!(
        text.contains("a signal on `decisions` where (is Approved and Approved.amount >= 100)"),
        "{text}"
    );
    assert!(
        text.contains("1 signal(s) buffered on `decisions`"),
        "{text}"
    );
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_channel_sets_the_signal_aside_with_the_reason() {
    // Capacity 3: the fourth signal that nobody takes is dead-lettered, on both.
    let ms = Duration::from_millis;
    let tested = WorkflowTester::new()
        .signal(ms(1), ApprovalStub.decisions(), rejected("a"))
        .signal(ms(2), ApprovalStub.decisions(), rejected("b"))
        .signal(ms(3), ApprovalStub.decisions(), rejected("c"))
        .signal(ms(4), ApprovalStub.decisions(), rejected("d"))
        .run(ApprovalImpl::default, ApprovalStub.first_or_timeout(100))
        .await
        .unwrap();
    assert_eq!(tested.output, Some(rejected("a")));
    let [dead] = tested.dead_letters.as_slice() else {
        panic!("one dead letter: {:?}", tested.dead_letters);
    };
    assert!(
        dead.reason.contains("channel `decisions`"),
        "{}",
        dead.reason
    );
    assert!(
        dead.reason.contains("full (3 signals buffered)"),
        "{}",
        dead.reason
    );

    let runtime = Runtime::start(register, RetryPolicy::default());
    let client = &runtime.client;
    client
        .dispatch_with_id("full", ApprovalStub.first_or_timeout(400))
        .await
        .unwrap();
    for by in ["a", "b", "c", "d"] {
        client
            .signal("full", ApprovalStub.decisions(), rejected(by))
            .await
            .unwrap();
    }
    let first: Option<Decision> = client
        .handle("full")
        .result_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(first, Some(rejected("a")));
    let dead = runtime.store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].reason.contains("full (3 signals buffered)"),
        "{}",
        dead[0].reason
    );
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_sent_twice_under_one_id_is_received_once() {
    let runtime = Runtime::start(register, RetryPolicy::default());
    let client = &runtime.client;
    client
        .dispatch_with_id("twice", ApprovalStub.run(300))
        .await
        .unwrap();
    for _ in 0..2 {
        client
            .signal_with_id(
                "twice",
                ApprovalStub.decisions(),
                approved("cy", 500),
                "s-1",
            )
            .await
            .unwrap();
    }
    client
        .signal("twice", ApprovalStub.decisions(), rejected("ada"))
        .await
        .unwrap();
    client
        .signal("twice", ApprovalStub.notes(), "thanks".to_string())
        .await
        .unwrap();
    let output: Outcome = client
        .handle("twice")
        .result_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(output.0, approved("cy", 500));
    // The second copy was not received: the next decision is the rejection.
    assert_eq!(output.1, vec![rejected("ada")]);
    let history = runtime.history("twice").await;
    assert_eq!(
        history
            .signals()
            .filter(|s| s.channel == "decisions")
            .count(),
        2
    );
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_to_no_instance_an_ended_one_or_the_wrong_workflow_are_errors() {
    let runtime = Runtime::start(register, RetryPolicy::default());
    let client = &runtime.client;
    let missing = client
        .signal("nobody", ApprovalStub.decisions(), rejected("ada"))
        .await;
    assert!(
        matches!(&missing, Err(ClientError::NotFound(id)) if id.as_str() == "nobody"),
        "{missing:?}"
    );
    let _: Option<Decision> = runtime.run("ended", ApprovalStub.first_or_timeout(0)).await;
    let ended = client
        .signal("ended", ApprovalStub.decisions(), rejected("ada"))
        .await;
    assert!(
        matches!(&ended, Err(ClientError::Ended { .. })),
        "{ended:?}"
    );
    assert!(ended
        .unwrap_err()
        .to_string()
        .contains("has ended (completed)"));
    client
        .dispatch_with_id("manager-x", ManagerStub.run("nobody".into()))
        .await
        .unwrap();
    let wrong = client
        .signal("manager-x", ApprovalStub.notes(), "hi".to_string())
        .await;
    assert!(
        matches!(&wrong, Err(ClientError::WrongWorkflow { .. })),
        "{wrong:?}"
    );
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_signals_another_and_a_signal_to_nobody_is_a_dead_letter() {
    let runtime = Runtime::start(register, RetryPolicy::default());
    let client = &runtime.client;
    client
        .dispatch_with_id("approval-2", ApprovalStub.first_or_timeout(0))
        .await
        .unwrap();
    client
        .dispatch_with_id("manager", ManagerStub.run("approval-2".into()))
        .await
        .unwrap();
    let first: Option<Decision> = client
        .handle("approval-2")
        .result_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(first, Some(approved("boss", 900)));

    // To an instance that does not exist: both signals are set aside with the reason.
    client
        .dispatch_with_id("manager-2", ManagerStub.run("ghost".into()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dead = runtime.store.dead_letters(10).await.unwrap();
        if dead.len() >= 2 {
            assert!(
                dead.iter()
                    .all(|d| d.reason.contains("unknown workflow instance ghost")),
                "{dead:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{dead:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runtime.stop().await;
}

#[tokio::test]
async fn a_workflow_to_workflow_signal_is_recorded_as_a_settled_command() {
    // The manager's history records its two sends (complete at once) and its receive.
    let tested = WorkflowTester::new()
        .signal(
            Duration::from_secs(1),
            ManagerStub.replies(),
            "done".to_string(),
        )
        // Served here, so the sends are delivered (and refused: no such instance).
        .child_workflow(ApprovalImpl::default)
        .run(ManagerImpl::default, ManagerStub.run("elsewhere".into()))
        .await
        .unwrap();
    assert_eq!(tested.output, "done");
    let settled: Vec<bool> = tested
        .history
        .scheduled()
        .map(|r| r.command.is_settled_at_once())
        .collect();
    assert_eq!(settled, vec![true, true, false]);
    assert!(matches!(
        tested.history.events.last(),
        Some(HistoryEvent::Signaled(s)) if s.to == Some(2)
    ));
    // The sends went out, to an instance that does not exist in the tester: dead letters.
    assert_eq!(tested.dead_letters.len(), 2, "{:?}", tested.dead_letters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_for_a_parked_instance_is_stored_with_it() {
    let runtime = Runtime::start(register, RetryPolicy::default());
    let client = &runtime.client;
    client
        .dispatch_with_id("touchy", TouchyStub.run())
        .await
        .unwrap();
    client
        .signal("touchy", TouchyStub.pokes(), 13)
        .await
        .unwrap();
    let id = WorkflowId::new("touchy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        client.status(&id).await.unwrap(),
        Some(infinitic::WorkflowState::Parked(_))
    ) {
        assert!(Instant::now() < deadline, "should park");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Parked, not ended: a signal is still accepted, and kept with the instance.
    client
        .signal("touchy", TouchyStub.pokes(), 7)
        .await
        .unwrap();
    let description = loop {
        let description = client.describe(&id).await.unwrap().unwrap();
        if description.buffered.get("pokes") == Some(&1) {
            break description;
        }
        assert!(Instant::now() < deadline, "{description}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(description.to_string().contains("unlucky"), "{description}");
    let history = runtime.history("touchy").await;
    let signals: Vec<Option<u32>> = history.signals().map(|s| s.to).collect();
    assert_eq!(signals, vec![Some(0), None]);
    assert!(runtime.store.dead_letters(10).await.unwrap().is_empty());
    runtime.stop().await;
}
