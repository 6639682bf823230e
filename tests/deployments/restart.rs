//! Workers stop while a workflow waits on a timer; new workers, on backends opened again as
//! by a new process, take it over: the timer fires, the next step runs, and the step done
//! before the restart is not run again.

use crate::{finish, retries, Deployment};
use infinitic::prelude::*;
use infinitic::status::Waiting;
use infinitic::WorkflowId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[service]
pub trait Tally {
    /// How many times this process was asked for `label`, this call included.
    async fn count(&self, label: String) -> u32;
}

#[derive(Clone, Default)]
struct TallyImpl(Arc<Mutex<BTreeMap<String, u32>>>);

impl TallyImpl {
    fn calls(&self, label: &str) -> u32 {
        self.0.lock().unwrap().get(label).copied().unwrap_or(0)
    }
}

impl Tally for TallyImpl {
    async fn count(&self, label: String) -> u32 {
        let mut calls = self.0.lock().unwrap();
        let n = calls.entry(label).or_default();
        *n += 1;
        *n
    }
}

#[workflow]
pub trait Resumed {
    /// A step, a timer, a step: the two steps' counts.
    async fn run(&self, millis: u64) -> (u32, u32);
}

#[derive(Default)]
pub struct ResumedImpl {
    tally: TallyStub,
}

#[workflow]
impl Resumed for ResumedImpl {
    async fn run(&self, millis: u64) -> (u32, u32) {
        let before = self.tally.count("before".into()).await.unwrap_or(0);
        workflow::sleep(Duration::from_millis(millis)).await;
        let after = self.tally.count("after".into()).await.unwrap_or(0);
        (before, after)
    }
}

pub async fn new_workers_take_over_a_workflow_waiting_on_a_timer<D: Deployment>(mut d: D) {
    let first = TallyImpl::default();
    let register = |tally: &TallyImpl| {
        let tally = tally.clone();
        move |w: infinitic::Worker<D::T, D::S>| {
            w.service(TallyDispatcher::new(tally))
                .workflow(ResumedImpl::default)
        }
    };
    let worker = d.start(retries(3, Duration::from_millis(50)), register(&first));
    let handle = d
        .client()
        .dispatch_with_id("resumed-1", ResumedStub.run(1_000))
        .await
        .unwrap();
    // Wait until the instance waits on its timer: the first step is recorded.
    let id = WorkflowId::new("resumed-1");
    let deadline = Instant::now() + d.patience();
    loop {
        let description = d.client().describe(&id).await.unwrap();
        let on_timer = description.as_ref().is_some_and(|d| {
            d.waiting_on
                .iter()
                .any(|w| matches!(w.what, Waiting::Timer { .. }))
        });
        if on_timer {
            break;
        }
        assert!(Instant::now() < deadline, "{description:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.restart(worker).await;
    let second = TallyImpl::default();
    let worker = d.start(retries(3, Duration::from_millis(50)), register(&second));
    let handle = d.client().handle::<(u32, u32)>(handle.id().clone());
    assert_eq!(finish(&d, &handle).await, (1, 1));
    assert_eq!(first.calls("before"), 1);
    assert_eq!(first.calls("after"), 0, "the timer had not fired yet");
    assert_eq!(
        second.calls("before"),
        0,
        "a recorded step is not run again"
    );
    assert_eq!(second.calls("after"), 1);
    d.stop(worker).await;
}
