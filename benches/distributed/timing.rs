//! Per-stage timings of the distributed deployment, to see what bounds a workload: wrappers
//! around the transport and the state store that time each operation (PostgreSQL commit,
//! relay read / publish / clear, broker publish, receive, settle) and count what it carried.

use infinitic::store::{
    Activity, CommitOutcome, DeadLetter, Finished, LocalHandoff, OutboxEntry, Outgoing, Pending,
    Received, Settlement, StoreError, StoredWorkflow, Transition,
};
use infinitic::{StateStore, Transport, WorkflowId};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One stage's call durations and the items they carried.
type Stage = (Vec<Duration>, u64);

/// Durations and item counts per stage.
#[derive(Clone, Default)]
pub struct Stages(Arc<Mutex<BTreeMap<&'static str, Stage>>>);

impl Stages {
    fn record(&self, stage: &'static str, took: Duration, items: usize) {
        let mut all = self.0.lock().expect("stages lock");
        let (times, count) = all.entry(stage).or_default();
        times.push(took);
        *count += items as u64;
    }

    /// Forgets what was recorded (at the start of a phase).
    pub fn reset(&self) {
        self.0.lock().expect("stages lock").clear();
    }

    /// One line per stage: calls, items per call, p50 / p99 / mean duration.
    pub fn report(&self, wall: Duration) -> String {
        let all = self.0.lock().expect("stages lock");
        let mut out = String::new();
        for (stage, (times, items)) in all.iter() {
            let mut sorted = times.clone();
            sorted.sort();
            let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
            let total: Duration = sorted.iter().sum();
            out.push_str(&format!(
                "    {stage:<28} {:>6} calls ({:>6.1}/s), {:>6.1} items/call, p50 {:>7.2} ms, p99 {:>7.2} ms, busy {:>5.1}% of wall\n",
                sorted.len(),
                sorted.len() as f64 / wall.as_secs_f64(),
                *items as f64 / sorted.len().max(1) as f64,
                at(0.5).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3,
                100.0 * total.as_secs_f64() / wall.as_secs_f64(),
            ));
        }
        out
    }
}

/// A transport whose operations are timed.
#[derive(Clone)]
pub struct TimedTransport<T> {
    pub inner: T,
    pub stages: Stages,
}

impl<T: Transport> Transport for TimedTransport<T> {
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), StoreError> {
        let (start, n) = (Instant::now(), messages.len());
        let published = self.inner.publish(messages).await;
        self.stages.record("broker publish", start.elapsed(), n);
        published
    }

    async fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Received, StoreError> {
        let start = Instant::now();
        let received = self.inner.receive(topics, max, lease).await;
        let n = received.as_ref().map_or(0, |r| r.deliveries.len());
        let stage = if n > 0 {
            "receive (with messages)"
        } else {
            "receive (empty)"
        };
        self.stages.record(stage, start.elapsed(), n);
        received
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), StoreError> {
        let (start, n) = (Instant::now(), settlements.len());
        let settled = self.inner.settle(settlements).await;
        self.stages
            .record("broker settle (ack)", start.elapsed(), n);
        settled
    }

    fn activity(&self) -> Activity {
        self.inner.activity()
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(limit).await
    }

    fn local_handoff(&self) -> Option<&dyn LocalHandoff> {
        self.inner.local_handoff()
    }

    fn max_message_bytes(&self) -> Option<usize> {
        self.inner.max_message_bytes()
    }
}

/// A state store whose operations are timed.
#[derive(Clone)]
pub struct TimedState<S> {
    pub inner: S,
    pub stages: Stages,
}

impl<S: StateStore> StateStore for TimedState<S> {
    async fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        let start = Instant::now();
        let loaded = self.inner.load(id, with_history).await;
        self.stages.record("pg load", start.elapsed(), 1);
        loaded
    }

    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>> {
        let (start, n) = (Instant::now(), transitions.len());
        let committed = self.inner.commit(transitions);
        let stages = self.stages.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let outcome = committed.await;
            stages.record("pg commit", start.elapsed(), n);
            let _ = reply.send(outcome);
        });
        Pending::new(answer)
    }

    fn finished(&self) -> Finished {
        self.inner.finished()
    }

    fn settles_on_commit(&self) -> bool {
        self.inner.settles_on_commit()
    }

    async fn outbox(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let start = Instant::now();
        let entries = self.inner.outbox(max).await;
        let n = entries.as_ref().map_or(0, Vec::len);
        self.stages.record("relay: read outbox", start.elapsed(), n);
        entries
    }

    async fn clear_outbox(&self, ids: Vec<u64>) -> Result<(), StoreError> {
        let (start, n) = (Instant::now(), ids.len());
        let cleared = self.inner.clear_outbox(ids).await;
        self.stages
            .record("relay: clear outbox", start.elapsed(), n);
        cleared
    }
}
