//! The benchmarks' workflows, one definition for every deployment so each measures the same
//! workloads: `Sequence` (W1: 10 sequential steps, n -> n+1) and `FanOut` (W2: parallel steps,
//! summed), both calling the `Step` service.

use infinitic::prelude::*;

#[service]
pub trait Step {
    async fn inc(&self, n: u64) -> u64;
}

pub struct StepImpl;
impl Step for StepImpl {
    async fn inc(&self, n: u64) -> u64 {
        n + 1
    }
}

#[workflow]
pub trait Sequence {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct SequenceImpl {
    step: StepStub,
}

#[workflow]
impl Sequence for SequenceImpl {
    async fn run(&self, mut n: u64) -> u64 {
        for _ in 0..10 {
            n = self.step.inc(n).await.unwrap_or(0);
        }
        n
    }
}

#[workflow]
pub trait FanOut {
    async fn run(&self, width: u64) -> u64;
}

#[derive(Default)]
pub struct FanOutImpl {
    step: StepStub,
}

#[workflow]
impl FanOut for FanOutImpl {
    async fn run(&self, width: u64) -> u64 {
        let calls = (0..width).map(|i| self.step.inc(i));
        workflow::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.unwrap_or(0))
            .sum()
    }
}
