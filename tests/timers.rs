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
