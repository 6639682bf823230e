//! A timer never fires before its deadline: deadlines are rounded up to whole milliseconds,
//! never down. The same workflow runs on the `WorkflowTester` and on the embedded runtime, and
//! both agree: a "sleep until the deadline" loop sleeps once, and after it
//! `workflow::now() >= deadline`; a timer shorter than a millisecond still moves the clock.

use infinitic::prelude::*;
use infinitic::store::memory::MemoryStore;
use infinitic::{Client, Worker, WorkerConfig, WorkflowTester};
use std::time::Duration;

#[workflow]
pub trait Deadline {
    /// Sleeps until `micros` after the start; returns how many sleeps that took, whether the
    /// clock then read at least the deadline, and whether a 999 µs sleep moved the clock.
    async fn run(&self, micros: u64) -> (u32, bool, bool);
}

#[derive(Default)]
pub struct DeadlineImpl;

#[workflow]
impl Deadline for DeadlineImpl {
    async fn run(&self, micros: u64) -> (u32, bool, bool) {
        let deadline = workflow::now() + Duration::from_micros(micros);
        let mut sleeps = 0;
        // Bounded so that a timer firing early shows as a count, not as a hang.
        while workflow::now() < deadline && sleeps < 5 {
            workflow::sleep_until(deadline).await;
            sleeps += 1;
        }
        let reached = workflow::now() >= deadline;
        let before = workflow::timestamp();
        workflow::sleep(Duration::from_micros(999)).await;
        (sleeps, reached, workflow::timestamp() > before)
    }
}

const EXPECTED: (u32, bool, bool) = (1, true, true);

#[tokio::test]
async fn on_the_tester_a_sub_millisecond_deadline_is_reached_in_one_sleep() {
    let run = WorkflowTester::new()
        .run(DeadlineImpl::default, DeadlineStub.run(1_500))
        .await
        .unwrap();
    assert_eq!(run.output, EXPECTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_runtime_the_same() {
    let store = MemoryStore::new();
    let worker = Worker::new(store.clone())
        .workflow(DeadlineImpl::default)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        Client::new(store).run(DeadlineStub.run(1_500)),
    )
    .await
    .expect("finishes")
    .unwrap();
    assert_eq!(output, EXPECTED);
    worker.shutdown().await;
}

#[workflow]
pub trait Nap {
    /// Sleeps `ms` milliseconds.
    async fn run(&self, ms: u64);
}

#[derive(Default)]
pub struct NapImpl;

#[workflow]
impl Nap for NapImpl {
    async fn run(&self, ms: u64) {
        workflow::sleep(Duration::from_millis(ms)).await;
    }
}

/// One clock decides when a timer is due: the workers'. A broker whose clock runs 1.5 s ahead
/// delivers a timer's wake-up 1.5 s early; the worker holds it until its due time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_a_broker_delivers_early_by_its_own_clock_waits_for_the_workers_clock() {
    use infinitic::clock::OffsetClock;
    use infinitic::store::memory_state::MemoryStateStore;
    use std::sync::Arc;
    let broker_clock = OffsetClock::default();
    broker_clock.set_offset_ms(1_500);
    let broker = MemoryStore::with_clock(Arc::new(broker_clock));
    let state = MemoryStateStore::new();
    let worker = Worker::with_backends(broker.clone(), state.clone())
        .workflow(NapImpl::default)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    let started = std::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(10),
        Client::with_backends(broker, state).run(NapStub.run(1_000)),
    )
    .await
    .expect("finishes")
    .unwrap();
    let slept = started.elapsed();
    worker.shutdown().await;
    assert!(
        slept >= Duration::from_millis(1_000),
        "fired after {slept:?}"
    );
}
