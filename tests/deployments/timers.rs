//! A durable timer never fires early: a workflow sleeping until a deadline ~300 ms away
//! wakes once, at or after it, on the workflow's clock and on the wall clock.

use crate::{finish, retries, Deployment};
use infinitic::prelude::*;
use std::time::{Duration, Instant};

#[workflow]
pub trait Sleeper {
    /// Sleeps until `millis` after the start; returns how many sleeps that took and how long
    /// the workflow's clock says it slept.
    async fn run(&self, millis: u64) -> (u32, u64);
}

#[derive(Default)]
pub struct SleeperImpl;

#[workflow]
impl Sleeper for SleeperImpl {
    async fn run(&self, millis: u64) -> (u32, u64) {
        let start = workflow::now();
        let deadline = start + Duration::from_millis(millis);
        let mut sleeps = 0;
        // Bounded so that a timer firing early shows as a count, not as a hang.
        while workflow::now() < deadline && sleeps < 5 {
            workflow::sleep_until(deadline).await;
            sleeps += 1;
        }
        let slept = workflow::now().duration_since(start).unwrap_or_default();
        (sleeps, u64::try_from(slept.as_millis()).unwrap_or(u64::MAX))
    }
}

pub async fn a_timer_never_fires_early<D: Deployment>(d: D) {
    const SLEEP: u64 = 300;
    let worker = d.start(retries(3, Duration::from_millis(50)), |w| {
        w.workflow(SleeperImpl::default)
    });
    let started = Instant::now();
    let handle = d
        .client()
        .dispatch_with_id("sleeper-1", SleeperStub.run(SLEEP))
        .await
        .unwrap();
    let (sleeps, slept) = finish(&d, &handle).await;
    let elapsed = started.elapsed();
    assert_eq!(sleeps, 1, "one sleep reaches the deadline");
    assert!(slept >= SLEEP, "the workflow woke after {slept} ms");
    assert!(
        elapsed >= Duration::from_millis(SLEEP),
        "the result came after {elapsed:?}"
    );
    d.stop(worker).await;
}
