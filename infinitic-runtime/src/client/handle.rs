//! A handle on one instance: its status, and its result when it has one.

use super::{Client, ClientError, Reach};
use crate::protocol;
use crate::store::{StateStore, StoreError, WorkflowState};
use infinitic_core::WorkflowId;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::time::Duration;

/// How many times a handle over a broker looks for an instance the store does not show, a
/// poll interval apart, before it says `NotFound`: about a second by default.
const START_LOOKS: u32 = 20;

/// A started workflow instance whose method returns `R`.
#[derive(Debug, Clone)]
pub struct WorkflowHandle<R, S> {
    id: WorkflowId,
    client: Client<S>,
    /// Set when this client started the instance over a broker: its workflow's name, and the
    /// start already asked the instance to report to this client.
    started: Option<String>,
    _result: PhantomData<fn() -> R>,
}

impl<R, S> WorkflowHandle<R, S> {
    /// A handle on `id`, which this client did not start over a broker.
    pub(super) fn of(client: Client<S>, id: WorkflowId) -> Self {
        Self {
            id,
            client,
            started: None,
            _result: PhantomData,
        }
    }

    /// A handle on `id`, just started over a broker by `client` (a `workflow`).
    pub(super) fn started(client: Client<S>, id: WorkflowId, workflow: String) -> Self {
        Self {
            started: Some(workflow),
            ..Self::of(client, id)
        }
    }
}

impl<R: DeserializeOwned, S: StateStore + Clone> WorkflowHandle<R, S> {
    /// The instance's id: keep it to find the instance again, from any process.
    pub fn id(&self) -> &WorkflowId {
        &self.id
    }

    /// Where the instance stands. Started over a broker by this client and not yet taken by a
    /// worker, it is `Pending`.
    pub async fn status(&self) -> Result<WorkflowState, ClientError> {
        match self.client.status(&self.id).await? {
            Some(state) => Ok(state),
            None if self.started.is_some() => Ok(WorkflowState::Pending),
            None => Err(ClientError::NotFound(self.id.clone())),
        }
    }

    /// The result, if the instance has one already.
    pub async fn try_result(&self) -> Result<Option<R>, ClientError> {
        self.outcome(self.status().await?)
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

    /// Waits for the result. Over a broker the instance reports it to this client's response
    /// topic (the store is read once, in case it has ended already; an instance it does not
    /// show yet, which another process may just have started, is looked for during about a
    /// second before it is `NotFound`); on an embedded store it is read when this process
    /// finishes the instance, and polled for other processes.
    pub async fn result(&self) -> Result<R, ClientError> {
        match &self.client.reach {
            Reach::Broker(responses) => {
                let result = self.reported(responses).await;
                responses.forget_abandoned(&self.id);
                result
            }
            Reach::Store(_) => {
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
    }

    /// The result as the instance reports it to this client's response topic.
    async fn reported(&self, responses: &super::Responses) -> Result<R, ClientError> {
        // Registered before looking: a report arriving in between is not missed.
        let report = responses.register(&self.id);
        let mut looked = 0;
        let workflow = loop {
            match self.client.store.load(&self.id, false).await? {
                Some(stored) => {
                    if let Some(result) = self.outcome(stored.state)? {
                        return Ok(result);
                    }
                    break stored.header.workflow;
                }
                None => match &self.started {
                    Some(workflow) => break workflow.clone(),
                    // Another process's start may be on its way to a worker: look again a
                    // few times (its workflow, hence its topic, is not known before).
                    None if looked < START_LOOKS => {
                        looked += 1;
                        tokio::time::sleep(self.client.poll_interval).await;
                    }
                    None => return Err(ClientError::NotFound(self.id.clone())),
                },
            }
        };
        if self.started.is_none() {
            let at = self.client.clock.now();
            let ask = protocol::wait_for_result(&workflow, &self.id, responses.topic(), at);
            responses.publish(vec![ask]).await?;
        }
        match report.await.map_err(|_| StoreError::Closed)? {
            Some(state) => match self.outcome(state)? {
                Some(result) => Ok(result),
                None => Err(ClientError::Store(StoreError::Database(format!(
                    "workflow {} reported a state that is not final",
                    self.id
                )))),
            },
            None => Err(ClientError::NotFound(self.id.clone())),
        }
    }

    /// The result `state` holds, `None` while the instance runs.
    fn outcome(&self, state: WorkflowState) -> Result<Option<R>, ClientError> {
        match state {
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
}
