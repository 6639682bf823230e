//! The boundaries between workers and the world: a [`Transport`] moves messages, a
//! [`StateStore`] keeps workflow state and history.
//!
//! They are shaped for both deployments. The embedded [`sqlite::SqliteStore`] implements both
//! on one file, so a state change, its outgoing messages and the removal of the consumed
//! message commit in one transaction (exactly-once). A broker with keyed routing, acks and
//! redelivery implements [`Transport`]; a database with compare-and-set writes and an outbox
//! table implements [`StateStore`] (the outbox is relayed to the broker after commit, and the
//! consumed message is acked after commit).

mod encoding;
mod error;
pub mod memory;
pub mod memory_state;
mod memory_workflows;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "pulsar")]
pub mod pulsar;
pub mod sqlite;

pub use error::StoreError;

use infinitic_core::message::{MessageId, ParentStep};
use infinitic_core::{Generation, HistoryEvent, Payload, Timestamp, WorkflowId};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::ops::Range;
use std::time::Duration;

/// The transport's handle on one delivered message until it is settled: for the embedded
/// stores the queue row, for a broker whatever it needs to ack that delivery. Not the
/// message's own id ([`infinitic_core::message::MessageId`]), which a message published again
/// keeps while its delivery handle changes.
///
/// ```
/// use infinitic_runtime::store::DeliveryId;
/// let handle = DeliveryId::new(42);
/// assert_eq!(handle.get(), 42);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(u64);

impl DeliveryId {
    /// A handle, as its transport numbers its deliveries.
    pub const fn new(handle: u64) -> Self {
        Self(handle)
    }

    /// The number the transport gave.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination topic (see [`crate::topics`]).
    pub topic: String,
    /// Routing key: messages with one key are handled by one owner at a time.
    pub key: String,
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// Not delivered before this time (timers, retry backoff).
    pub deliver_at: Timestamp,
    /// `Some(lease)`: the sender processes this message itself, in memory (with [`Self::id`]);
    /// it is stored already leased for `lease`, to be redelivered only if the sender dies.
    /// Only for transports that offer a [`LocalHandoff`]; workers set it for no other.
    pub local_lease: Option<Duration>,
    /// A delivery handle reserved with [`LocalHandoff::reserve_ids`], so the sender can hand
    /// the message over before the commit that stores it has finished.
    pub id: Option<DeliveryId>,
    /// `Some(its message id)` when this message is a durable timer (the completion of a
    /// `StartTimer`, delivered at its due time). A state store that is not its own transport
    /// keeps such a message as the timer's record until the transition that consumes that id
    /// (see [`StateStore::overdue_timers`]): the broker's delayed message is only the wake-up.
    pub timer: Option<MessageId>,
}

impl Outgoing {
    /// A message for any consumer of `topic`, deliverable from `deliver_at`.
    pub fn new(
        topic: impl Into<String>,
        key: impl Into<String>,
        payload: Vec<u8>,
        deliver_at: Timestamp,
    ) -> Self {
        Self {
            topic: topic.into(),
            key: key.into(),
            payload,
            deliver_at,
            local_lease: None,
            id: None,
            timer: None,
        }
    }

    /// This message, marked as the durable timer whose message id is `id` (see
    /// [`Self::timer`]).
    pub fn as_timer(mut self, id: MessageId) -> Self {
        self.timer = Some(id);
        self
    }
}

/// A message leased to this consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Settle it with this id.
    pub id: DeliveryId,
    /// Its topic.
    pub topic: String,
    /// Its routing key.
    pub key: String,
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// How many times it has been delivered, this time included.
    pub attempt: u32,
}

/// What to do with a delivered message. Publishing and settling happen atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Done: remove it and publish `publish`.
    Ack {
        /// The delivery.
        delivery: DeliveryId,
        /// Messages published with the ack.
        publish: Vec<Outgoing>,
    },
    /// Deliver it again at `at` (retry backoff).
    Retry {
        /// The delivery.
        delivery: DeliveryId,
        /// When.
        at: Timestamp,
    },
    /// It can never be processed: move it to the dead letters with `reason`, and publish
    /// `publish` (typically: tell the waiting workflow).
    DeadLetter {
        /// The delivery.
        delivery: DeliveryId,
        /// Why, readable.
        reason: String,
        /// Messages published with the move.
        publish: Vec<Outgoing>,
    },
}

impl Settlement {
    /// The delivery it settles.
    pub fn delivery(&self) -> DeliveryId {
        match self {
            Settlement::Ack { delivery, .. }
            | Settlement::Retry { delivery, .. }
            | Settlement::DeadLetter { delivery, .. } => *delivery,
        }
    }
}

/// A batch of leased messages and when the next delayed one becomes visible.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Leased messages, oldest first.
    pub deliveries: Vec<Delivery>,
    /// Earliest time a not-yet-visible message of these topics becomes visible.
    pub next_visible_at: Option<Timestamp>,
}

/// Where a workflow instance stands, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowState {
    /// Dispatched by a client; no worker has started it yet.
    Pending,
    /// Started, waiting on durable steps.
    Running,
    /// Returned this encoded value.
    Completed(Payload),
    /// Stopped safely; needs a fix and a retry (non-determinism, panic, ...).
    Parked(String),
    /// Could not start (unknown method, undecodable arguments).
    Failed(String),
}

impl std::fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkflowState::Pending => f.write_str("pending (no worker has started it yet)"),
            WorkflowState::Running => f.write_str("running"),
            WorkflowState::Completed(_) => f.write_str("completed"),
            WorkflowState::Parked(reason) => write!(f, "parked ({reason})"),
            WorkflowState::Failed(reason) => write!(f, "failed to start ({reason})"),
        }
    }
}

impl WorkflowState {
    /// Completed, parked or failed: nothing more will happen by itself.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            WorkflowState::Completed(_) | WorkflowState::Failed(_) | WorkflowState::Parked(_)
        )
    }
}

/// The fixed facts of an instance, written when it is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowHeader {
    /// Which use of the instance's id it is (see [`Generation`]).
    pub generation: Generation,
    /// Workflow name.
    pub workflow: String,
    /// Method name.
    pub method: String,
    /// Encoded arguments.
    pub input: Payload,
    /// When it started.
    pub started_at: Timestamp,
    /// The waiting parent step, for a child workflow.
    pub parent: Option<ParentStep>,
}

/// An instance as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWorkflow {
    /// Its id.
    pub id: WorkflowId,
    /// Fixed facts.
    pub header: WorkflowHeader,
    /// Where it stands.
    pub state: WorkflowState,
    /// Incremented by every committed transition (compare-and-set).
    pub version: u64,
    /// Its history (empty when loaded without it).
    pub history: Vec<HistoryEvent>,
    /// Clients' response topics the instance reports to when it ends (see
    /// [`Transition::report_to`]).
    pub report_to: Vec<String>,
}

/// One atomic state change of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The instance.
    pub workflow_id: WorkflowId,
    /// The version this change was computed from; 0 creates the instance (at version 1).
    pub expected_version: u64,
    /// Required when creating, or when a pending instance starts.
    pub header: Option<WorkflowHeader>,
    /// The new state.
    pub state: WorkflowState,
    /// History events to append.
    pub append: Vec<HistoryEvent>,
    /// Messages to publish with the change.
    pub outbox: Vec<Outgoing>,
    /// The message this change consumed: removed (or recorded as consumed) in the same commit.
    pub consumed: Option<Consumed>,
    /// Set when the consumed message could not be processed: it is moved to the dead letters
    /// with this reason instead of being deleted.
    pub dead_letter: Option<String>,
    /// `Some`: replaces the clients' response topics the instance reports to when it ends
    /// (a client waiting over a broker asked for it); `None` keeps them.
    pub report_to: Option<Vec<String>>,
}

/// A consumed message: its id (what a state store records, so a redelivery is recognised)
/// and the delivery it came in (what its transport settles).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    /// The message's id ([`infinitic_core::message::Message::id`]).
    pub message: MessageId,
    /// The transport's delivery of it.
    pub delivery: DeliveryId,
}

/// The result of one transition of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Durable.
    Committed,
    /// Not applied: the version moved on, or the consumed message was already consumed.
    Conflict,
}

/// Moves messages: publish, lease, settle.
pub trait Transport: Send + Sync + 'static {
    /// Publishes messages durably.
    fn publish(
        &self,
        messages: Vec<Outgoing>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Leases up to `max` visible messages of `topics` for `lease`; they are redelivered if not
    /// settled by then.
    fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Received, StoreError>> + Send;

    /// Settles deliveries, atomically with what they publish.
    fn settle(
        &self,
        settlements: Vec<Settlement>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A subscription to commits made through this handle's process: lets consumers sleep
    /// until there may be something new instead of polling fast.
    fn activity(&self) -> Activity;

    /// Dead-lettered messages, newest first.
    fn dead_letters(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send;

    /// The in-memory hand-off this transport offers, if any (see [`LocalHandoff`]). A
    /// transport that is not also the state store has none.
    fn local_handoff(&self) -> Option<&dyn LocalHandoff> {
        None
    }

    /// The largest message (payload plus key, in bytes) this transport accepts, if it has a
    /// limit (a broker's maximum message size). [`Transport::publish`] refuses a larger one with
    /// [`StoreError::TooLarge`] before sending anything. A worker that relays a state store's
    /// outbox should check its messages against this before the commit that records them (an
    /// outbox entry that can never be published would block its relay); with the default
    /// [`infinitic_core::Limits`] (4 MiB payloads) envelopes stay below Pulsar's 5 MB.
    fn max_message_bytes(&self) -> Option<usize> {
        None
    }
}

/// What a backend that is both transport and state store (the embedded stores) offers so a
/// worker hands a task to a service worker of its own process right after the commit that
/// records it: message ids reserved ahead, so the task can be handed over before that commit
/// has finished, its message stored already leased ([`Outgoing::local_lease`]). An
/// optimisation of those backends, not something a transport must do.
pub trait LocalHandoff: Send + Sync {
    /// Reserves `count` ids for [`Outgoing::id`]: no other message will get them.
    /// The handles are the range's numbers ([`DeliveryId::new`]).
    fn reserve_ids(&self, count: u32) -> BoxFuture<'_, Result<Range<u64>, StoreError>>;
}

/// A boxed future, for the trait objects above.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message waiting in a state store's outbox to be published (see [`StateStore::outbox`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its place in the outbox, to clear it once published.
    pub id: u64,
    /// The message.
    pub message: Outgoing,
}

/// Wakes consumers when this process commits something. Create it before looking for work,
/// so a commit in between is not missed.
#[derive(Debug, Clone)]
pub struct Activity(tokio::sync::watch::Receiver<u64>);

impl Activity {
    /// Wraps a commit counter that the transport increments on every commit.
    pub fn new(commits: tokio::sync::watch::Receiver<u64>) -> Self {
        let mut commits = commits;
        commits.mark_unchanged();
        Self(commits)
    }

    /// Resolves when a commit happened since the last call (or creation), or after `timeout`
    /// (commits of other processes are only seen by looking again).
    pub async fn wait(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.0.changed()).await;
        self.0.mark_unchanged();
    }
}

/// Keeps workflow state and history.
pub trait StateStore: Send + Sync + 'static {
    /// Loads an instance, with its history if `with_history`.
    fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> impl Future<Output = Result<Option<StoredWorkflow>, StoreError>> + Send;

    /// Commits transitions in order, each atomically with its outbox and consumed message,
    /// each compare-and-set on its version.
    ///
    /// The commit is submitted when this is called, not when the result is awaited: commits
    /// called one after the other apply in that order, and so do operations submitted after
    /// this call (a settle of a message this commit stores finds it).
    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>>;

    /// A subscription to instances reaching a final state through this process's commits.
    fn finished(&self) -> Finished;

    /// Whether a commit also settles the transport: the store is the transport (the embedded
    /// stores), so a commit publishes its outbox and removes (or dead-letters) the consumed
    /// message itself. Otherwise a worker publishes the outbox through a relay
    /// ([`Self::outbox`]) and settles consumed messages on the transport after the commit.
    fn settles_on_commit(&self) -> bool {
        false
    }

    /// Up to `max` messages committed in outboxes and not yet published, oldest first.
    /// Empty for stores that publish in the commit itself. Entries are returned again until
    /// they are cleared; a store that several processes share (one database) may claim what
    /// it returns for the handle that read it, so the relays of the other handles skip those
    /// entries for a while and each is normally published once (a claim expires: the entries
    /// of a relay that died are published by another).
    fn outbox(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StoreError>> + Send {
        let _ = max;
        async { Ok(Vec::new()) }
    }

    /// Durable timers whose due time passed more than the store's grace period ago and whose
    /// message no transition consumed yet, up to `max`, by the store's clock: the broker lost
    /// or delayed their wake-up, so the relay publishes them again (a timer its instance
    /// already consumed changes nothing: it is recognised by its id and by the history). A
    /// timer returned is not returned again before another grace period. Empty for stores
    /// that keep no timers apart from their outbox (the embedded stores deliver their own
    /// queue rows, which are the timers).
    fn overdue_timers(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Outgoing>, StoreError>> + Send {
        let _ = max;
        async { Ok(Vec::new()) }
    }

    /// Forgets outbox entries once they are published (publishing again after a crash is
    /// harmless: message ids do not change, and consumers recognise what they consumed).
    fn clear_outbox(&self, ids: Vec<u64>) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = ids;
        async { Ok(()) }
    }
}

/// The answer to an operation already submitted to the store.
#[derive(Debug)]
pub struct Pending<T>(tokio::sync::oneshot::Receiver<Result<T, StoreError>>);

impl<T> Pending<T> {
    /// Wraps the receiving end of the operation's answer.
    pub fn new(answer: tokio::sync::oneshot::Receiver<Result<T, StoreError>>) -> Self {
        Self(answer)
    }

    /// An operation answered already (a store that applies it at once).
    pub fn ready(result: Result<T, StoreError>) -> Self {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = reply.send(result);
        Self(answer)
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Tells waiting clients which instances reached a final state. Subscribe before checking the
/// state, so a change in between is not missed.
#[derive(Debug)]
pub struct Finished(tokio::sync::broadcast::Receiver<WorkflowId>);

impl Finished {
    /// Wraps a broadcast of finished instance ids.
    pub fn new(ids: tokio::sync::broadcast::Receiver<WorkflowId>) -> Self {
        Self(ids)
    }

    /// Resolves when `id` finished through this process, when notifications were missed (look
    /// again), or after `timeout` (other processes' commits are only seen by looking again).
    pub async fn wait_for(&mut self, id: &WorkflowId, timeout: Duration) {
        let wait = async {
            loop {
                match self.0.recv().await {
                    Ok(finished) if finished == *id => return,
                    Ok(_) => continue,
                    Err(_) => return, // lagged or closed: look again
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

/// A message that could not be processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its topic.
    pub topic: String,
    /// Its key.
    pub key: String,
    /// Why it was set aside.
    pub reason: String,
    /// The original bytes.
    pub payload: Vec<u8>,
}
