//! The client: start workflows, await their results, ask for their status, from any process
//! that can reach the store.

use crate::clock::{Clock, WallClock};
use crate::protocol;
use crate::status::Description;
use crate::store::{
    CommitOutcome, StateStore, StoreError, Transport, WorkflowHeader, WorkflowState,
};
use infinitic_core::{
    ChannelRef, EncodeError, Generation, LimitError, Limits, WorkflowCall, WorkflowId,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
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

/// Starts workflows and reads their results.
#[derive(Clone, Debug)]
pub struct Client<S> {
    store: S,
    poll_interval: Duration,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl<S: StateStore + Clone> Client<S> {
    /// A client on `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
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
        let transition = protocol::start_pending(&id, header);
        // A conflict means the instance exists already: same handle, nothing started twice.
        let _: Vec<CommitOutcome> =
            self.store
                .commit(vec![transition])
                .await
                .map_err(|error| match error {
                    StoreError::OutcomeUnknown(reason) => ClientError::OutcomeUnknown {
                        id: id.clone(),
                        reason,
                    },
                    other => ClientError::Store(other),
                })?;
        Ok(self.handle(id))
    }

    /// Starts `call` and waits for its result.
    pub async fn run<R: DeserializeOwned>(&self, call: WorkflowCall<R>) -> Result<R, ClientError> {
        self.dispatch(call).await?.result().await
    }

    /// A handle on an existing instance (from another process, say).
    pub fn handle<R>(&self, id: impl Into<WorkflowId>) -> WorkflowHandle<R, S> {
        WorkflowHandle {
            id: id.into(),
            client: self.clone(),
            _result: PhantomData,
        }
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
}

impl<S: StateStore + Transport + Clone> Client<S> {
    /// Sends `value` to channel `channel` of instance `id` (a signal: an approval, a webhook's
    /// news, a cancellation). The instance receives it when its code waits on the channel, or
    /// buffers it until then. An instance that does not exist or has ended is an error at
    /// once; nothing is sent.
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
        let stored = self
            .store
            .load(&id, false)
            .await?
            .ok_or_else(|| ClientError::NotFound(id.clone()))?;
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
        let message = protocol::signal(
            channel.workflow(),
            &id,
            channel.channel(),
            value,
            &signal_id.into(),
            self.clock.now(),
        );
        self.store.publish(vec![message]).await?;
        Ok(())
    }
}

/// A started workflow instance whose method returns `R`.
#[derive(Debug, Clone)]
pub struct WorkflowHandle<R, S> {
    id: WorkflowId,
    client: Client<S>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned, S: StateStore + Clone> WorkflowHandle<R, S> {
    /// The instance's id: keep it to find the instance again, from any process.
    pub fn id(&self) -> &WorkflowId {
        &self.id
    }

    /// Where the instance stands.
    pub async fn status(&self) -> Result<WorkflowState, ClientError> {
        self.client
            .status(&self.id)
            .await?
            .ok_or_else(|| ClientError::NotFound(self.id.clone()))
    }

    /// The result, if the instance has one already.
    pub async fn try_result(&self) -> Result<Option<R>, ClientError> {
        match self.status().await? {
            WorkflowState::Completed(bytes) => {
                self.client
                    .limits
                    .decode(&bytes)
                    .map(Some)
                    .map_err(|e| ClientError::BadResult {
                        id: self.id.clone(),
                        reason: e.to_string(),
                    })
            }
            WorkflowState::Failed(reason) => Err(ClientError::Failed {
                id: self.id.clone(),
                reason,
            }),
            WorkflowState::Parked(reason) => Err(ClientError::Parked {
                id: self.id.clone(),
                reason,
            }),
            WorkflowState::Pending | WorkflowState::Running => Ok(None),
        }
    }

    /// Waits for the result at most `timeout`: [`ClientError::TimedOut`] after it (the
    /// instance goes on; ask again later, from any process, with its id).
    ///
    /// ```no_run
    /// # async fn demo(handle: infinitic_runtime::client::WorkflowHandle<u64, infinitic_runtime::store::memory::MemoryStore>) {
    /// use infinitic_runtime::client::ClientError;
    /// use std::time::Duration;
    /// let said = match handle.result_within(Duration::from_secs(5)).await {
    ///     Ok(total) => format!("total {total}"),
    ///     Err(ClientError::TimedOut { id, .. }) => format!("{id} still running"),
    ///     Err(other) => format!("failed: {other}"),
    /// };
    /// # let _ = said;
    /// # }
    /// ```
    pub async fn result_within(&self, timeout: Duration) -> Result<R, ClientError> {
        tokio::time::timeout(timeout, self.result())
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::TimedOut {
                    id: self.id.clone(),
                    waited: timeout,
                })
            })
    }

    /// Waits for the result.
    pub async fn result(&self) -> Result<R, ClientError> {
        let mut finished = self.client.store.finished();
        loop {
            if let Some(result) = self.try_result().await? {
                return Ok(result);
            }
            // Woken when this process finishes it; other processes' commits are polled.
            finished.wait_for(&self.id, self.client.poll_interval).await;
        }
    }
}
