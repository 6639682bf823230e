//! The benchmark's workflows (the embedded benchmark's shapes) and the three workloads, run
//! through a client on any deployment.
//!
//! - W1a: one workflow of 10 sequential steps at a time: latency per workflow.
//! - W1b: 1,000 such workflows, 100 in flight: steps/s and latency per workflow.
//! - W2: one workflow fanning out 100 parallel steps and summing them: latency.

use infinitic::prelude::*;
use infinitic::StateStore;
use std::time::Instant;

#[path = "../support/workloads.rs"]
mod definitions;

pub use definitions::{
    FanOutImpl, FanOutStub, SequenceImpl, SequenceStub, StepDispatcher, StepImpl,
};

/// Latencies (ms) and, for W1b, throughput.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub latencies_ms: Vec<f64>,
    pub steps_per_s: f64,
}

impl Figures {
    fn new(mut latencies_ms: Vec<f64>, steps_per_s: f64) -> Self {
        latencies_ms.sort_by(|a, b| a.total_cmp(b));
        Self {
            latencies_ms,
            steps_per_s,
        }
    }

    /// The `p` quantile (0..=1) of the latencies, ms.
    pub fn at(&self, p: f64) -> f64 {
        let l = &self.latencies_ms;
        if l.is_empty() {
            return f64::NAN;
        }
        l[(((l.len() - 1) as f64) * p).round() as usize]
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// A few workflows of each kind, so connections, topics and caches are warm.
pub async fn warm_up<S: StateStore + Clone + Send + Sync + 'static>(client: &Client<S>) {
    for i in 0..3 {
        assert_eq!(client.run(SequenceStub.run(i)).await.unwrap(), i + 10);
    }
    assert_eq!(client.run(FanOutStub.run(10)).await.unwrap(), 55);
}

/// W1a: `runs` workflows of 10 steps, one at a time.
pub async fn w1a<S: StateStore + Clone>(client: &Client<S>, runs: usize) -> Figures {
    let mut latencies = Vec::new();
    for i in 0..runs as u64 {
        let start = Instant::now();
        let out = client.run(SequenceStub.run(i)).await.unwrap();
        latencies.push(ms(start));
        assert_eq!(out, i + 10);
    }
    Figures::new(latencies, 0.0)
}

/// W1b: `total` workflows of 10 steps, 100 in flight.
pub async fn w1b<S: StateStore + Clone + Send + Sync + 'static>(
    client: &Client<S>,
    total: u64,
) -> Figures {
    let in_flight = 100;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut latencies = Vec::new();
    let mut next = 0u64;
    while next < total || !tasks.is_empty() {
        while tasks.len() < in_flight && next < total {
            let client = client.clone();
            let n = next;
            tasks.spawn(async move {
                let t = Instant::now();
                let out = client.run(SequenceStub.run(n)).await.unwrap();
                assert_eq!(out, n + 10);
                ms(t)
            });
            next += 1;
        }
        if let Some(done) = tasks.join_next().await {
            latencies.push(done.unwrap());
        }
    }
    let steps = (total * 10) as f64 / start.elapsed().as_secs_f64();
    Figures::new(latencies, steps)
}

/// W2: `runs` fan-outs of 100 steps, one at a time.
pub async fn w2<S: StateStore + Clone>(client: &Client<S>, runs: usize) -> Figures {
    let mut latencies = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let out = client.run(FanOutStub.run(100)).await.unwrap();
        latencies.push(ms(start));
        assert_eq!(out, (1..=100).sum::<u64>());
    }
    Figures::new(latencies, 0.0)
}
