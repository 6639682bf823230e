//! A plain in-memory backend: [`Transport`] and [`StateStore`] on maps behind one mutex,
//! nothing on disk. It has the same semantics as the SQLite store (the same contract tests
//! run against both): compare-and-set transitions applied whole with their history, outbox and
//! consumed message; leases, delayed visibility, retries and dead letters. It is what tests
//! and the `WorkflowTester` run on, and the proof that the traits do not assume SQLite.

use super::memory_workflows::{lock, WorkflowTable};
use super::{
    Activity, BoxFuture, CommitOutcome, DeadLetter, Delivery, DeliveryId, Finished, LocalHandoff,
    Outgoing, Pending, Received, Settlement, StateStore, StoreError, StoredWorkflow, Transition,
    Transport,
};
use crate::clock::{Clock, WallClock};
use infinitic_core::{Timestamp, WorkflowId};
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The in-memory store. Cheap to clone; clones share the same contents.
///
/// ```
/// use infinitic_runtime::clock::{Clock, WallClock};
/// use infinitic_runtime::store::memory::MemoryStore;
/// use infinitic_runtime::store::{Outgoing, Transport};
/// use std::time::Duration;
/// # let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # runtime.block_on(async {
/// let store = MemoryStore::new();
/// let topic = "service:Echo".to_string();
/// store.publish(vec![Outgoing::new(topic.as_str(), "k", vec![1], WallClock.now())]).await?;
/// let received = store.receive(&[topic], 10, Duration::from_secs(30)).await?;
/// assert_eq!(received.deliveries[0].payload, vec![1]);
/// # Ok::<(), infinitic_runtime::store::StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    contents: Mutex<Contents>,
    clock: Arc<dyn Clock>,
    /// Counts commits that published messages for any consumer (see [`Activity`]).
    commits: watch::Sender<u64>,
    finished: broadcast::Sender<WorkflowId>,
    /// The largest message it carries, as a broker would refuse bigger ones.
    max_message_bytes: Option<usize>,
}

/// Everything stored.
#[derive(Debug, Default)]
struct Contents {
    /// The last message id handed out.
    last_id: u64,
    messages: HashMap<DeliveryId, Message>,
    /// Each topic's messages in delivery order: visible at, then id.
    topics: HashMap<String, BTreeSet<(Timestamp, DeliveryId)>>,
    workflows: WorkflowTable,
    /// Oldest first.
    dead_letters: Vec<DeadLetter>,
}

#[derive(Debug)]
struct Message {
    topic: String,
    key: String,
    payload: Vec<u8>,
    visible_at: Timestamp,
    attempts: u32,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the wall clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(WallClock))
    }

    /// An empty store on `clock` (which decides when delayed messages become visible).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::built(clock, None)
    }

    /// An empty store on the wall clock that carries messages (payload and key) of at most
    /// `bytes`, as a broker does: it refuses to publish a bigger one
    /// ([`StoreError::TooLarge`]) and says so in [`Transport::max_message_bytes`], which
    /// workers check before the commit that would record one.
    ///
    /// ```
    /// use infinitic_runtime::store::memory::MemoryStore;
    /// use infinitic_runtime::store::Transport;
    /// assert_eq!(MemoryStore::with_max_message_bytes(1024).max_message_bytes(), Some(1024));
    /// ```
    pub fn with_max_message_bytes(bytes: usize) -> Self {
        Self::built(Arc::new(WallClock), Some(bytes))
    }

    fn built(clock: Arc<dyn Clock>, max_message_bytes: Option<usize>) -> Self {
        let (commits, _) = watch::channel(0);
        let (finished, _) = broadcast::channel(4096);
        Self {
            shared: Arc::new(Shared {
                contents: Mutex::new(Contents::default()),
                clock,
                commits,
                finished,
                max_message_bytes,
            }),
        }
    }

    /// Refuses, before storing anything, a message bigger than this store carries.
    fn check_sizes(&self, messages: &[Outgoing]) -> Result<(), StoreError> {
        let Some(limit) = self.shared.max_message_bytes else {
            return Ok(());
        };
        match messages
            .iter()
            .find(|m| m.payload.len() + m.key.len() > limit)
        {
            Some(m) => Err(StoreError::TooLarge {
                topic: m.topic.clone(),
                size: m.payload.len() + m.key.len(),
                limit,
            }),
            None => Ok(()),
        }
    }

    fn contents(&self) -> MutexGuard<'_, Contents> {
        lock(&self.shared.contents)
    }

    fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Wakes consumers after a change that published messages for them.
    fn announce(&self, published: bool, finished: Vec<WorkflowId>) {
        if published {
            self.shared.commits.send_modify(|n| *n += 1);
        }
        for id in finished {
            let _ = self.shared.finished.send(id);
        }
    }
}

impl Contents {
    /// Stores messages; `true` if any is for any consumer (not leased to its sender).
    fn insert(&mut self, messages: &[Outgoing], now: Timestamp) -> bool {
        let mut published = false;
        for m in messages {
            let (visible_at, attempts) = match m.local_lease {
                Some(lease) => (m.deliver_at.max(now) + lease, 1),
                None => {
                    published = true;
                    (m.deliver_at, 0)
                }
            };
            let id = match m.id {
                Some(id) => id,
                None => {
                    self.last_id += 1;
                    DeliveryId::new(self.last_id)
                }
            };
            self.last_id = self.last_id.max(id.get());
            self.topics
                .entry(m.topic.clone())
                .or_default()
                .insert((visible_at, id));
            self.messages.insert(
                id,
                Message {
                    topic: m.topic.clone(),
                    key: m.key.clone(),
                    payload: m.payload.clone(),
                    visible_at,
                    attempts,
                },
            );
        }
        published
    }

    fn remove(&mut self, id: DeliveryId) -> Option<Message> {
        let message = self.messages.remove(&id)?;
        if let Some(order) = self.topics.get_mut(&message.topic) {
            order.remove(&(message.visible_at, id));
        }
        Some(message)
    }

    fn make_visible_at(&mut self, id: DeliveryId, at: Timestamp) {
        if let Some(message) = self.messages.get_mut(&id) {
            if let Some(order) = self.topics.get_mut(&message.topic) {
                order.remove(&(message.visible_at, id));
                order.insert((at, id));
            }
            message.visible_at = at;
        }
    }

    fn dead_letter(&mut self, id: DeliveryId, reason: &str) -> bool {
        match self.remove(id) {
            Some(message) => {
                self.dead_letters.push(DeadLetter {
                    topic: message.topic,
                    key: message.key,
                    reason: reason.to_string(),
                    payload: message.payload,
                });
                true
            }
            None => false,
        }
    }

    /// Applies one transition whole, or nothing of it on a conflict (the checks come first).
    fn apply(&mut self, t: &Transition, now: Timestamp) -> (CommitOutcome, bool) {
        let consumed = t.consumed.as_ref().map(|c| c.delivery);
        let consumed_gone = consumed.is_some_and(|id| !self.messages.contains_key(&id));
        let fits = self.workflows.fits(t);
        if !fits || consumed_gone {
            return (CommitOutcome::Conflict, false);
        }
        if let Some(id) = consumed {
            match &t.dead_letter {
                Some(reason) => {
                    self.dead_letter(id, reason);
                }
                None => {
                    self.remove(id);
                }
            }
        }
        let published = self.insert(&t.outbox, now);
        self.workflows.apply(t);
        (CommitOutcome::Committed, published)
    }
}

impl Transport for MemoryStore {
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), StoreError> {
        self.check_sizes(&messages)?;
        let now = self.now();
        let published = self.contents().insert(&messages, now);
        self.announce(published, Vec::new());
        Ok(())
    }

    async fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Received, StoreError> {
        let now = self.now();
        let mut contents = self.contents();
        let mut received = Received::default();
        for topic in topics {
            let Some(order) = contents.topics.get(topic) else {
                continue;
            };
            let room = max.saturating_sub(received.deliveries.len());
            let mut due = Vec::new();
            for &(visible_at, id) in order {
                if visible_at > now || due.len() == room {
                    let next = received
                        .next_visible_at
                        .map_or(visible_at, |t| t.min(visible_at));
                    received.next_visible_at = Some(next);
                    break;
                }
                due.push(id);
            }
            for id in due {
                contents.make_visible_at(id, now + lease);
                let Some(message) = contents.messages.get_mut(&id) else {
                    continue;
                };
                message.attempts += 1;
                received.deliveries.push(Delivery {
                    id,
                    topic: message.topic.clone(),
                    key: message.key.clone(),
                    payload: message.payload.clone(),
                    attempt: message.attempts,
                });
            }
        }
        Ok(received)
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), StoreError> {
        let now = self.now();
        let mut published = false;
        {
            let mut contents = self.contents();
            for settlement in &settlements {
                match settlement {
                    Settlement::Ack { delivery, publish } => {
                        // Already gone (settled by another consumer): nothing published twice.
                        if contents.remove(*delivery).is_some() {
                            published |= contents.insert(publish, now);
                        }
                    }
                    Settlement::Retry { delivery, at } => contents.make_visible_at(*delivery, *at),
                    Settlement::DeadLetter {
                        delivery,
                        reason,
                        publish,
                    } => {
                        if contents.dead_letter(*delivery, reason) {
                            published |= contents.insert(publish, now);
                        }
                    }
                }
            }
        }
        self.announce(published, Vec::new());
        Ok(())
    }

    fn activity(&self) -> Activity {
        Activity::new(self.shared.commits.subscribe())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let contents = self.contents();
        Ok(contents
            .dead_letters
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    fn local_handoff(&self) -> Option<&dyn LocalHandoff> {
        Some(self)
    }

    fn max_message_bytes(&self) -> Option<usize> {
        self.shared.max_message_bytes
    }
}

impl LocalHandoff for MemoryStore {
    fn reserve_ids(&self, count: u32) -> BoxFuture<'_, Result<Range<u64>, StoreError>> {
        let reserved = {
            let mut contents = self.contents();
            let first = contents.last_id + 1;
            contents.last_id += u64::from(count.max(1));
            first..contents.last_id + 1
        };
        Box::pin(async move { Ok(reserved) })
    }
}

impl StateStore for MemoryStore {
    async fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        Ok(self.contents().workflows.load(id, with_history))
    }

    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>> {
        Pending::ready(self.commit_now(&transitions))
    }

    fn finished(&self) -> Finished {
        Finished::new(self.shared.finished.subscribe())
    }

    fn settles_on_commit(&self) -> bool {
        true
    }
}

impl MemoryStore {
    /// Applies a commit at once (so commits apply in the order they are called), each
    /// transition whole or not at all; a transition that cannot be valid fails the call whole.
    fn commit_now(&self, transitions: &[Transition]) -> Result<Vec<CommitOutcome>, StoreError> {
        WorkflowTable::check(transitions)?;
        let now = self.now();
        let mut published = false;
        let mut finished = Vec::new();
        let outcomes = {
            let mut contents = self.contents();
            transitions
                .iter()
                .map(|t| {
                    let (outcome, sent) = contents.apply(t, now);
                    published |= sent;
                    if outcome == CommitOutcome::Committed && t.state.is_final() {
                        finished.push(t.workflow_id.clone());
                    }
                    outcome
                })
                .collect()
        };
        self.announce(published, finished);
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, body: u8, at: Timestamp) -> Outgoing {
        Outgoing::new(topic, "k", vec![body], at)
    }

    #[tokio::test]
    async fn delayed_messages_wait_and_leases_hide_them_until_they_expire() {
        let store = MemoryStore::new();
        let now = store.now();
        let topic = "t".to_string();
        store
            .publish(vec![
                message("t", 1, now),
                message("t", 2, now + Duration::from_secs(60)),
            ])
            .await
            .unwrap();
        let lease = Duration::from_millis(30);
        let first = store
            .receive(std::slice::from_ref(&topic), 10, lease)
            .await
            .unwrap();
        assert_eq!(first.deliveries.len(), 1);
        assert_eq!(first.deliveries[0].attempt, 1);
        assert!(first.next_visible_at.is_some());
        let leased = store
            .receive(std::slice::from_ref(&topic), 10, lease)
            .await
            .unwrap();
        assert!(leased.deliveries.is_empty(), "leased messages are hidden");
        tokio::time::sleep(Duration::from_millis(60)).await;
        let again = store.receive(&[topic], 10, lease).await.unwrap();
        assert_eq!(
            again.deliveries[0].attempt, 2,
            "delivered again after its lease"
        );
    }

    #[tokio::test]
    async fn reserved_ids_are_never_handed_out_again() {
        let store = MemoryStore::new();
        let ids = store
            .local_handoff()
            .unwrap()
            .reserve_ids(10)
            .await
            .unwrap();
        assert_eq!(ids, 1..11);
        store
            .publish(vec![message("t", 1, store.now())])
            .await
            .unwrap();
        let received = store
            .receive(&["t".to_string()], 1, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(!ids.contains(&received.deliveries[0].id.get()));
    }
}
