//! A client's response topic over a broker: instances report there how they ended, and one
//! task per client hands each report to the handles waiting for that instance.

use crate::protocol::Response;
use crate::store::{
    Activity, BoxFuture, Outgoing, Received, Settlement, StoreError, Transport, WorkflowState,
};
use crate::worker::{backoff, warn_throttled};
use infinitic_core::WorkflowId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a client needs of a transport, with the transport's type erased (so `Client<S>` does
/// not carry it).
pub(crate) trait Link: Send + Sync + 'static {
    fn publish(&self, messages: Vec<Outgoing>) -> BoxFuture<'_, Result<(), StoreError>>;
    fn receive<'a>(
        &'a self,
        topics: &'a [String],
        max: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Received, StoreError>>;
    fn settle(&self, settlements: Vec<Settlement>) -> BoxFuture<'_, Result<(), StoreError>>;
    fn activity(&self) -> Activity;
}

impl<T: Transport> Link for T {
    fn publish(&self, messages: Vec<Outgoing>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Transport::publish(self, messages))
    }

    fn receive<'a>(
        &'a self,
        topics: &'a [String],
        max: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Received, StoreError>> {
        Box::pin(Transport::receive(self, topics, max, lease))
    }

    fn settle(&self, settlements: Vec<Settlement>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Transport::settle(self, settlements))
    }

    fn activity(&self) -> Activity {
        Transport::activity(self)
    }
}

/// What a report says: the instance's final state, or `None` when there is no such instance.
pub(crate) type Report = Option<WorkflowState>;

/// The handles waiting, by instance.
type Waiters = Mutex<HashMap<WorkflowId, Vec<oneshot::Sender<Report>>>>;

/// One client's response topic and the task that reads it (started on first use, stopped
/// when the last clone of the client is dropped).
pub(crate) struct Responses {
    topic: String,
    link: Arc<dyn Link>,
    waiters: Arc<Waiters>,
    listener: OnceLock<JoinHandle<()>>,
}

impl std::fmt::Debug for Responses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responses")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Drop for Responses {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

impl Responses {
    pub(crate) fn new(topic: String, link: Arc<dyn Link>) -> Self {
        Self {
            topic,
            link,
            waiters: Arc::default(),
            listener: OnceLock::new(),
        }
    }

    /// The topic instances report to.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends messages on the client's transport.
    pub(crate) async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), StoreError> {
        self.link.publish(messages).await
    }

    /// Registers interest in `id`'s report. Register before looking at the store: a report
    /// that arrives in between is then not missed.
    pub(crate) fn register(&self, id: &WorkflowId) -> oneshot::Receiver<Report> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).entry(id.clone()).or_default().push(tx);
        self.listener.get_or_init(|| {
            tokio::spawn(listen(
                Arc::clone(&self.link),
                self.topic.clone(),
                Arc::clone(&self.waiters),
            ))
        });
        rx
    }

    /// Forgets the waiters of `id` that gave up (their receivers were dropped).
    pub(crate) fn forget_abandoned(&self, id: &WorkflowId) {
        let mut waiters = lock(&self.waiters);
        if let Some(list) = waiters.get_mut(id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiters.remove(id);
            }
        }
    }
}

/// Reads the response topic until aborted: each report wakes the handles waiting for its
/// instance; one nobody waits for any more is acknowledged and dropped (the store has it).
async fn listen(link: Arc<dyn Link>, topic: String, waiters: Arc<Waiters>) {
    const POLL: Duration = Duration::from_millis(100);
    let topics = [topic];
    let mut activity = link.activity();
    let mut failures = 0u32;
    loop {
        let received = link.receive(&topics, 256, Duration::from_secs(30)).await;
        let deliveries = match received {
            Ok(received) if !received.deliveries.is_empty() => {
                failures = 0;
                received.deliveries
            }
            Ok(_) => {
                failures = 0;
                activity.wait(POLL).await;
                continue;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                warn_throttled("client responses", || {
                    format!(
                        "cannot read the client's response topic {}: {error}",
                        topics[0]
                    )
                });
                tokio::time::sleep(backoff(POLL, failures)).await;
                continue;
            }
        };
        let mut settlements = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match infinitic_core::decode::<Response>(&delivery.payload) {
                Ok(response) => {
                    let waiting = lock(&waiters).remove(&response.workflow_id);
                    for tx in waiting.into_iter().flatten() {
                        let _ = tx.send(response.state.clone());
                    }
                    settlements.push(Settlement::Ack {
                        delivery: delivery.id,
                        publish: Vec::new(),
                    });
                }
                Err(error) => settlements.push(Settlement::DeadLetter {
                    delivery: delivery.id,
                    reason: format!("undecodable response on a client topic: {error}"),
                    publish: Vec::new(),
                }),
            }
        }
        if let Err(error) = link.settle(settlements).await {
            // Redelivered after the lease: a report handled twice wakes nobody new.
            warn_throttled("client responses settle", || {
                format!("cannot acknowledge responses on {}: {error}", topics[0])
            });
        }
    }
}

fn lock(waiters: &Waiters) -> MutexGuard<'_, HashMap<WorkflowId, Vec<oneshot::Sender<Report>>>> {
    waiters
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
