//! TEMPORARY, until the client over the broker (`Client::with_backends`) lands: the
//! distributed client process as one value that is both a state store (PostgreSQL: starts,
//! status and results) and a transport (Pulsar: signals), because `Client::signal` needs one
//! value that is both. Starts are committed to PostgreSQL and published by a workflow worker's
//! outbox relay. Only `publish` is used on the transport side; the client consumes nothing.
//!
//! When it lands: delete this file and its `mod`; in `distributed.rs` build every client with
//! `Client::with_backends(transport.clone(), state)` (`status` too, if `Client::new` then needs
//! a transport); relax `clients::run` to `S: StateStore + Clone` if `signal` no longer needs
//! `S: Transport`.

use infinitic::store::postgres::PostgresStore;
use infinitic::store::pulsar::PulsarTransport;
use infinitic::store::{
    Activity, CommitOutcome, DeadLetter, Finished, OutboxEntry, Outgoing, Pending, Received,
    Settlement, StateStore, StoreError, StoredWorkflow, Transition, Transport,
};
use infinitic::WorkflowId;
use std::future::Future;
use std::time::Duration;

/// PostgreSQL for state, Pulsar for the signals a client sends.
#[derive(Clone)]
pub struct BrokerClient {
    pub state: PostgresStore,
    pub transport: PulsarTransport,
}

impl StateStore for BrokerClient {
    fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> impl Future<Output = Result<Option<StoredWorkflow>, StoreError>> + Send {
        self.state.load(id, with_history)
    }

    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>> {
        self.state.commit(transitions)
    }

    fn finished(&self) -> Finished {
        self.state.finished()
    }

    fn settles_on_commit(&self) -> bool {
        self.state.settles_on_commit()
    }

    fn outbox(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StoreError>> + Send {
        self.state.outbox(max)
    }

    fn clear_outbox(&self, ids: Vec<u64>) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.state.clear_outbox(ids)
    }
}

impl Transport for BrokerClient {
    fn publish(
        &self,
        messages: Vec<Outgoing>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.transport.publish(messages)
    }

    fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Received, StoreError>> + Send {
        self.transport.receive(topics, max, lease)
    }

    fn settle(
        &self,
        settlements: Vec<Settlement>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.transport.settle(settlements)
    }

    fn activity(&self) -> Activity {
        self.transport.activity()
    }

    fn dead_letters(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send {
        self.transport.dead_letters(limit)
    }

    fn max_message_bytes(&self) -> Option<usize> {
        self.transport.max_message_bytes()
    }
}
