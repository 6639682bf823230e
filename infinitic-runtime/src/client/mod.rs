//! The client: start workflows, await their results, send signals, ask for their status,
//! from any process that can reach the deployment.
//!
//! Two ways to reach it:
//! - [`Client::new`] on an embedded store (both transport and state store): a start is
//!   stored with its message in one commit, and a result is read from the store when this
//!   process's workers finish the instance (other processes' commits are polled);
//! - [`Client::with_backends`] over a broker: the client never writes to the state store. A
//!   start is a message carrying the client's own response topic, and the instance reports
//!   there how it ended; a handle built from an id asks the instance to report there too (it
//!   is answered at once if the instance has ended). The state store is only read: status,
//!   history, and one look when a handle starts waiting.

mod handle;
mod responses;

pub use handle::WorkflowHandle;

use crate::clock::{Clock, WallClock};
use crate::protocol;
use crate::status::Description;
use crate::store::{
    CommitOutcome, StateStore, StoreError, Transport, WorkflowHeader, WorkflowState,
};
use crate::topics;
use infinitic_core::{
    ChannelRef, EncodeError, Generation, LimitError, Limits, WorkflowCall, WorkflowId,
};
use responses::{Link, Responses};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The start of `id` may or may not have been stored (its commit is visible but the fsync
    /// failed). Retry with the same id, `dispatch_with_id(id, ..)`: it starts the instance if
    /// it is not there and returns its handle if it is; a fresh id could start it twice.
    #[error(
        "the start of workflow {id} may or may not be stored; retry with the same id: {reason}"
    )]
    OutcomeUnknown {
        /// The instance to retry with.
        id: WorkflowId,
        /// What failed.
        reason: String,
    },
    /// The call's arguments could not be encoded.
    #[error("the workflow call cannot be encoded: {0}")]
    BadCall(String),
    /// The call's arguments cross the client's [`Limits`]: nothing was stored or sent.
    #[error("the workflow call's arguments are refused: {0}")]
    Limit(LimitError),
    /// No instance has this id.
    #[error("no workflow instance with id {0}")]
    NotFound(WorkflowId),
    /// The instance could not start (unknown workflow or method, undecodable arguments).
    #[error("workflow {id} failed to start: {reason}")]
    Failed {
        /// The instance.
        id: WorkflowId,
        /// Why.
        reason: String,
    },
    /// The instance is parked and needs a fix (non-determinism, panic in workflow code).
    #[error("workflow {id} is parked: {reason}")]
    Parked {
        /// The instance.
        id: WorkflowId,
        /// Why.
        reason: String,
    },
    /// The instance has ended (completed, or failed to start): it takes no more signals.
    #[error("workflow {id} has ended ({state}): it takes no more signals")]
    Ended {
        /// The instance.
        id: WorkflowId,
        /// How it ended.
        state: String,
    },
    /// The instance is not of the workflow the channel belongs to.
    #[error("workflow {id} is a `{actual}` workflow; channel `{channel}` belongs to `{expected}`")]
    WrongWorkflow {
        /// The instance.
        id: WorkflowId,
        /// The channel.
        channel: String,
        /// The channel's workflow.
        expected: String,
        /// The instance's workflow.
        actual: String,
    },
    /// No result within the time the caller gave; the instance goes on.
    #[error("workflow {id} has no result after {waited:?}; it goes on")]
    TimedOut {
        /// The instance.
        id: WorkflowId,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The result does not decode as the expected type.
    #[error("the result of workflow {id} cannot be decoded: {reason}")]
    BadResult {
        /// The instance.
        id: WorkflowId,
        /// The decoder's message.
        reason: String,
    },
}

/// Starts workflows, sends them signals and reads their results.
#[derive(Clone, Debug)]
pub struct Client<S> {
    store: S,
    reach: Reach,
    poll_interval: Duration,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

/// How a client reaches the workers.
#[derive(Clone)]
enum Reach {
    /// Starts written to the store, other messages sent on this transport (the store itself,
    /// for the embedded stores).
    Store(Arc<dyn Link>),
    /// Over a broker, with a response topic of its own.
    Broker(Arc<Responses>),
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reach::Store(_) => f.write_str("Store"),
            Reach::Broker(responses) => write!(f, "Broker({})", responses.topic()),
        }
    }
}

impl<S: StateStore + Transport + Clone> Client<S> {
    /// A client on an embedded store, both transport and state store: a start is stored with
    /// its message in one commit.
    pub fn new(store: S) -> Self {
        let link: Arc<dyn Link> = Arc::new(store.clone());
        Self::reaching(store, Reach::Store(link))
    }
}

impl<S: StateStore + Clone> Client<S> {
    /// A client over a broker: starts, signals and requests for results travel on
    /// `transport`; `store` is only read (status, history, whether an instance has ended), so
    /// read-only database credentials do. Results come back on a response topic of this
    /// client's own (`client:` and a random id), read by a task started on the first wait
    /// (which needs a tokio runtime) and stopped when the last clone of the client is dropped.
    ///
    /// ```no_run
    /// # async fn demo(
    /// #     transport: infinitic_runtime::store::memory::MemoryStore,
    /// #     state: infinitic_runtime::store::memory_state::MemoryStateStore,
    /// # ) {
    /// use infinitic_runtime::client::Client;
    /// let client = Client::with_backends(transport, state);
    /// let handle = client.handle::<u64>("order-7");
    /// let total = handle.result().await; // reported by the instance, not polled
    /// # let _ = total;
    /// # }
    /// ```
    pub fn with_backends<T: Transport + Clone>(transport: T, store: S) -> Self {
        let topic = topics::client(&uuid::Uuid::now_v7().simple().to_string());
        let responses = Responses::new(topic, Arc::new(transport));
        Self::reaching(store, Reach::Broker(Arc::new(responses)))
    }

    /// A client that writes starts to `store` itself, each with its message in the store's
    /// outbox (relayed by the workers), and sends signals on `transport`: starting works
    /// while the broker is down, at the price of write access to the database. Results are
    /// read from the store (polled). Prefer [`Self::with_backends`], which needs no database
    /// writes.
    pub fn with_store_writes<T: Transport + Clone>(transport: T, store: S) -> Self {
        Self::reaching(store, Reach::Store(Arc::new(transport)))
    }

    fn reaching(store: S, reach: Reach) -> Self {
        Self {
            store,
            reach,
            poll_interval: Duration::from_millis(50),
            limits: Limits::default(),
            clock: Arc::new(WallClock),
        }
    }

    /// Sets the clock that stamps starts (default: the wall clock); use the workers' clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the limits start arguments are encoded within and results are decoded within
    /// (default: [`Limits::default`]); use the workers' limits.
    ///
    /// ```no_run
    /// # fn demo(store: infinitic_runtime::store::sqlite::SqliteStore) {
    /// use infinitic_core::Limits;
    /// use infinitic_runtime::client::Client;
    /// let client = Client::new(store).with_limits(Limits {
    ///     max_payload_bytes: 1024 * 1024,
    ///     ..Limits::default()
    /// });
    /// # }
    /// ```
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The topic instances report their results to, for a client over a broker.
    pub fn response_topic(&self) -> Option<&str> {
        match &self.reach {
            Reach::Store(_) => None,
            Reach::Broker(responses) => Some(responses.topic()),
        }
    }

    /// Starts `call` on a new instance with a random id and returns its handle at once.
    ///
    /// Retrying safely: [`ClientError::OutcomeUnknown`] carries the id that may have been
    /// stored; retry with [`Self::dispatch_with_id`] and that id, never with `dispatch` (a new
    /// id could start the workflow twice). [`StoreError::is_transient`] errors stored
    /// nothing, and may be retried either way.
    pub async fn dispatch<R>(
        &self,
        call: WorkflowCall<R>,
    ) -> Result<WorkflowHandle<R, S>, ClientError> {
        let id = WorkflowId::new(uuid::Uuid::now_v7().to_string());
        self.dispatch_with_id(id, call).await
    }

    /// Starts `call` on the instance `id`, unless that instance already exists: then returns
    /// its handle (at most one instance per id).
    ///
    /// Over a broker the start is a message: the instance appears in the store when a worker
    /// takes it (until then the handle's status is `Pending`), and the handle's result is
    /// reported to this client even when another client started the instance.
    pub async fn dispatch_with_id<R>(
        &self,
        id: impl Into<WorkflowId>,
        call: WorkflowCall<R>,
    ) -> Result<WorkflowHandle<R, S>, ClientError> {
        let id = id.into();
        let input = call.encode_args(&self.limits).map_err(|e| match e {
            EncodeError::Limit(limit) => ClientError::Limit(limit),
            EncodeError::Codec(codec) => ClientError::BadCall(codec.to_string()),
        })?;
        let header = WorkflowHeader {
            generation: Generation::FIRST,
            workflow: call.workflow().to_string(),
            method: call.method().to_string(),
            input,
            started_at: self.clock.now(),
            parent: None,
        };
        let unknown = |reason: String| ClientError::OutcomeUnknown {
            id: id.clone(),
            reason,
        };
        match &self.reach {
            Reach::Store(_) => {
                let transition = protocol::start_pending(&id, header);
                // A conflict means the instance exists already: same handle, nothing started
                // twice.
                let _: Vec<CommitOutcome> =
                    self.store
                        .commit(vec![transition])
                        .await
                        .map_err(|error| match error {
                            StoreError::OutcomeUnknown(reason) => unknown(reason),
                            other => ClientError::Store(other),
                        })?;
                Ok(self.handle(id))
            }
            Reach::Broker(responses) => {
                let start = protocol::start_over_broker(&id, &header, responses.topic());
                // A start sent twice starts one instance: the worker recognises the id.
                responses
                    .publish(vec![start])
                    .await
                    .map_err(|error| match error {
                        StoreError::OutcomeUnknown(reason) => unknown(reason),
                        other => ClientError::Store(other),
                    })?;
                Ok(WorkflowHandle::started(self.clone(), id, header.workflow))
            }
        }
    }

    /// Starts `call` and waits for its result.
    pub async fn run<R: DeserializeOwned>(&self, call: WorkflowCall<R>) -> Result<R, ClientError> {
        self.dispatch(call).await?.result().await
    }

    /// A handle on an existing instance (from another process, say).
    pub fn handle<R>(&self, id: impl Into<WorkflowId>) -> WorkflowHandle<R, S> {
        WorkflowHandle::of(self.clone(), id.into())
    }

    /// Where an instance stands and what it waits on (calls, timers, children with their own
    /// state), `None` if there is no such instance.
    ///
    /// ```no_run
    /// # async fn demo(client: infinitic_runtime::client::Client<infinitic_runtime::store::sqlite::SqliteStore>) {
    /// let id = "billing-user-42".into();
    /// if let Some(description) = client.describe(&id).await.unwrap() {
    ///     let reasons: Vec<String> = description
    ///         .waiting_on
    ///         .iter()
    ///         .map(|waiting| format!("{} since {:?}", waiting.what, waiting.since))
    ///         .collect();
    ///     assert_eq!(reasons.len(), description.waiting_on.len());
    /// }
    /// # }
    /// ```
    pub async fn describe(&self, id: &WorkflowId) -> Result<Option<Description>, ClientError> {
        Ok(crate::status::describe(&self.store, id).await?)
    }

    /// Where an instance stands, `None` if there is no such instance.
    pub async fn status(&self, id: &WorkflowId) -> Result<Option<WorkflowState>, ClientError> {
        Ok(self.store.load(id, false).await?.map(|w| w.state))
    }

    /// Sends `value` to channel `channel` of instance `id` (a signal: an approval, a webhook's
    /// news, a cancellation). The instance receives it when its code waits on the channel, or
    /// buffers it until then. An instance that has ended or is of another workflow is an
    /// error at once; nothing is sent. One that does not exist is too, on an embedded store;
    /// over a broker it may still be starting (its start travels ahead of the signal on the
    /// same ordered key), so the signal is sent, and dead-lettered with the reason if no such
    /// instance starts.
    ///
    /// ```no_run
    /// # use infinitic_core::ChannelRef;
    /// # async fn demo(client: infinitic_runtime::client::Client<infinitic_runtime::store::memory::MemoryStore>, unsubscribe: ChannelRef<String>) {
    /// client.signal("billing-user-42", unsubscribe, "moving abroad".to_string()).await.unwrap();
    /// # }
    /// ```
    pub async fn signal<T: Serialize>(
        &self,
        id: impl Into<WorkflowId>,
        channel: ChannelRef<T>,
        value: T,
    ) -> Result<(), ClientError> {
        let signal_id = uuid::Uuid::now_v7().to_string();
        self.signal_with_id(id, channel, value, signal_id).await
    }

    /// [`Self::signal`] under the caller's id for this signal: sent again with the same id
    /// (a retry after an error), it changes nothing.
    pub async fn signal_with_id<T: Serialize>(
        &self,
        id: impl Into<WorkflowId>,
        channel: ChannelRef<T>,
        value: T,
        signal_id: impl Into<String>,
    ) -> Result<(), ClientError> {
        let id = id.into();
        let value = self.limits.encode(&value).map_err(|e| match e {
            EncodeError::Limit(limit) => ClientError::Limit(limit),
            EncodeError::Codec(codec) => ClientError::BadCall(codec.to_string()),
        })?;
        match self.store.load(&id, false).await? {
            Some(stored) => {
                if let WorkflowState::Completed(_) | WorkflowState::Failed(_) = &stored.state {
                    return Err(ClientError::Ended {
                        id,
                        state: stored.state.to_string(),
                    });
                }
                if stored.header.workflow != channel.workflow() {
                    return Err(ClientError::WrongWorkflow {
                        id,
                        channel: channel.channel().to_string(),
                        expected: channel.workflow().to_string(),
                        actual: stored.header.workflow,
                    });
                }
            }
            None if matches!(self.reach, Reach::Broker(_)) => {} // may be starting
            None => return Err(ClientError::NotFound(id)),
        }
        let message = protocol::signal(
            channel.workflow(),
            &id,
            channel.channel(),
            value,
            &signal_id.into(),
            self.clock.now(),
        );
        self.publish(vec![message]).await?;
        Ok(())
    }

    async fn publish(&self, messages: Vec<crate::store::Outgoing>) -> Result<(), StoreError> {
        match &self.reach {
            Reach::Store(link) => link.publish(messages).await,
            Reach::Broker(responses) => responses.publish(messages).await,
        }
    }
}
