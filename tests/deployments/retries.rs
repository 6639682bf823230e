//! A failing task is retried by the workers' policy: one that fails twice then succeeds
//! completes on its third attempt; one that always fails ends the step with
//! `StepError::Failed` after the policy's attempts, and its workflow handles it.

use crate::dead_letters::show;
use crate::{finish, retries, Deployment};
use infinitic::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[service]
pub trait Flaky {
    /// Fails the first `failures` calls for `key`, then returns the attempt that succeeded.
    async fn call(&self, key: String, failures: u32) -> Result<u32, String>;
}

/// Counts the calls per key.
#[derive(Clone, Default)]
struct FlakyImpl(Arc<Mutex<BTreeMap<String, u32>>>);

impl FlakyImpl {
    fn calls(&self, key: &str) -> u32 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

impl Flaky for FlakyImpl {
    async fn call(&self, key: String, failures: u32) -> Result<u32, String> {
        let attempt = {
            let mut calls = self.0.lock().unwrap();
            let n = calls.entry(key).or_default();
            *n += 1;
            *n
        };
        if attempt <= failures {
            Err(format!("attempt {attempt} failed"))
        } else {
            Ok(attempt)
        }
    }
}

#[workflow]
pub trait Retried {
    /// The step's result as text.
    async fn run(&self, key: String, failures: u32) -> String;
}

#[derive(Default)]
pub struct RetriedImpl {
    flaky: FlakyStub,
}

#[workflow]
impl Retried for RetriedImpl {
    async fn run(&self, key: String, failures: u32) -> String {
        show(self.flaky.call(key, failures).await)
    }
}

const ATTEMPTS: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_millis(100);

/// Runs `Retried` with `failures`; its result, the calls made and how long it took.
async fn run<D: Deployment>(d: D, failures: u32) -> (String, u32, Duration) {
    let flaky = FlakyImpl::default();
    let worker = d.start(retries(ATTEMPTS, FIRST_DELAY), |w| {
        w.service(FlakyDispatcher::new(flaky.clone()))
            .workflow(RetriedImpl::default)
    });
    let started = Instant::now();
    let handle = d
        .client()
        .dispatch_with_id("retried-1", RetriedStub.run("k".into(), failures))
        .await
        .unwrap();
    let result = finish(&d, &handle).await;
    let elapsed = started.elapsed();
    d.stop(worker).await;
    (result, flaky.calls("k"), elapsed)
}

pub async fn a_failing_service_is_retried_until_it_succeeds<D: Deployment>(d: D) {
    let (result, calls, elapsed) = run(d, 2).await;
    assert_eq!(result, "ok 3");
    assert_eq!(calls, 3, "two failures, then the success");
    // Backoff: 100 ms before the second attempt, 200 ms before the third.
    assert!(elapsed >= FIRST_DELAY * 3, "retried too early: {elapsed:?}");
}

pub async fn a_service_that_always_fails_fails_the_step_after_the_policys_attempts<
    D: Deployment,
>(
    d: D,
) {
    let (result, calls, elapsed) = run(d, u32::MAX).await;
    assert_eq!(
        result,
        format!("Failed {{ error: \"attempt {ATTEMPTS} failed\", attempts: {ATTEMPTS} }}")
    );
    assert_eq!(calls, ATTEMPTS, "no attempt beyond the policy");
    assert!(elapsed >= FIRST_DELAY * 3, "retried too early: {elapsed:?}");
}
