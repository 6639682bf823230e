//! The PostgreSQL state store (feature `postgres`): workflow state, history and outbox in a
//! database beside a broker, for the distributed deployment.
//!
//! - A commit writes an instance's state, history and outbox in one transaction,
//!   compare-and-set on its version, and records the id of the message it consumed, so a
//!   redelivered message (brokers redeliver hundreds after a restart) is recognised and is a
//!   [`CommitOutcome::Conflict`] whatever its delivery. Recorded ids are forgotten after
//!   [`PostgresOptions::consumed_retention`].
//! - One writer connection applies commits in submission order, grouping every commit waiting
//!   at the time into one transaction whose statements are sent together (one round trip
//!   for the batch, one for its `COMMIT`). A conflicting transition writes nothing and does
//!   not fail the others. A few more connections serve loads and the outbox relay.
//! - **Timers live here.** A durable timer's truth is its row in the `timers` table, written
//!   by the transition that starts it (with its message, [`Outgoing::timer`]) and deleted by
//!   the one that consumes that message (or ends the instance), in the same transactions. The
//!   broker's delayed message is only the wake-up: the relay publishes again every timer due
//!   longer than [`PostgresOptions::timer_grace`] ago and not consumed yet
//!   ([`StateStore::overdue_timers`]), so a broker that loses timers (a crash, a lost ledger)
//!   delays them by the grace period and loses none. A timer delivered twice fires once: its
//!   message id is recorded as consumed, and past that record's retention the instance's
//!   history knows the timer fired (the delivery is acknowledged, not dead-lettered).
//! - **One clock.** Due times are absolute timestamps in history; the sweep compares them
//!   with the database's time, and [`PostgresStore::clock`] gives workers that time as read
//!   from their host (offset measured at connect and every minute), so a timer that a broker
//!   on a clock running ahead delivers early is held by the worker until it is due.
//! - Relays claim the outbox entries they read, so several workers on one database publish
//!   each entry once (see [`PostgresOptions::outbox_claim`]).
//! - The tables live in their own PostgreSQL schema ([`PostgresOptions::schema`]), created and
//!   migrated by the store, with a schema version: a schema of another application, or one
//!   written by a newer build, is refused with a clear error.
//!
//! ```no_run
//! use infinitic_runtime::store::memory::MemoryStore;
//! use infinitic_runtime::store::postgres::{PostgresOptions, PostgresStore, PostgresTls};
//! use infinitic_runtime::worker::Worker;
//! # async fn demo() -> Result<(), infinitic_runtime::store::StoreError> {
//! let options = PostgresOptions {
//!     tls: PostgresTls::Required { ca_file: Some("/etc/infinitic/ca.crt".into()) },
//!     ..PostgresOptions::default()
//! };
//! let store = PostgresStore::connect("postgres://app:secret@db:5432/app", options).await?;
//! let worker = Worker::with_backends(MemoryStore::new(), store) /* .service(..) */ .start();
//! # worker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod clock;
mod connection;
mod reads;
mod schema;
mod writer;

use super::{
    CommitOutcome, Finished, OutboxEntry, Outgoing, Pending, StateStore, StoreError,
    StoredWorkflow, Transition,
};
use crate::clock::{Clock, OffsetClock};
use connection::Target;
use infinitic_core::WorkflowId;
use reads::Readers;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use writer::{Encoded, Job, Writer};

pub use schema::SCHEMA_VERSION;

/// Whether and how connections use TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PostgresTls {
    /// Plain TCP (or a Unix socket).
    #[default]
    Disabled,
    /// TLS on every connection; the server's certificate must be signed by `ca_file` (a PEM
    /// file) or, when `None`, by a CA the system trusts, and name the host connected to.
    Required {
        /// The CA certificate (PEM) to trust instead of the system's.
        ca_file: Option<PathBuf>,
    },
}

/// How the store connects and what it keeps.
///
/// ```
/// use infinitic_runtime::store::postgres::PostgresOptions;
/// let options = PostgresOptions { schema: "billing".into(), ..PostgresOptions::default() };
/// assert_eq!(options.readers, 4);
/// ```
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// The PostgreSQL schema (namespace) holding the store's tables, created if missing.
    /// Several deployments may share a database with one schema each.
    pub schema: String,
    /// TLS for every connection.
    pub tls: PostgresTls,
    /// Connections for loads and the outbox (the writer has its own). Each serves concurrent
    /// queries (they are pipelined), so a few are enough.
    pub readers: usize,
    /// How long connecting may take before it fails.
    pub connect_timeout: Duration,
    /// How long the ids of consumed messages are kept: a message redelivered later than this
    /// would be applied again. Longer than any redelivery delay of the broker.
    pub consumed_retention: Duration,
    /// Most transitions committed in one transaction.
    pub max_batch: usize,
    /// How long an outbox entry read by a relay is left to it before other relays publish it
    /// too (a relay that died leaves its entries for this long).
    pub outbox_claim: Duration,
    /// How long after its due time a timer not consumed yet is published again from the
    /// `timers` table (the broker lost or delayed its wake-up); then again after twice that,
    /// four times, ... up to 64 times (a timer its instance ignores, the loser of a race,
    /// stays until the instance ends). Longer than the delivery delays of a busy deployment:
    /// publishing early only costs a duplicate, which is recognised.
    pub timer_grace: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "infinitic".into(),
            tls: PostgresTls::Disabled,
            readers: 4,
            connect_timeout: Duration::from_secs(10),
            consumed_retention: Duration::from_secs(7 * 24 * 3600),
            max_batch: 512,
            outbox_claim: Duration::from_secs(10),
            timer_grace: Duration::from_secs(30),
        }
    }
}

/// The PostgreSQL state store. Cheap to clone; clones share one writer and the readers.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: mpsc::UnboundedSender<Job>,
    readers: Readers,
    finished: broadcast::Sender<WorkflowId>,
    location: String,
    clock: OffsetClock,
}

impl AsRef<Readers> for Inner {
    fn as_ref(&self) -> &Readers {
        &self.readers
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`),
    /// creates the store's schema or migrates it, and starts the writer.
    ///
    /// Fails with [`StoreError::Unavailable`] when the server cannot be reached (naming it),
    /// [`StoreError::Database`] for refused credentials, a failed TLS handshake or a bad URL,
    /// [`StoreError::Corrupt`] for a schema of another application and
    /// [`StoreError::SchemaVersion`] for one written by a newer build.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let namespace = schema::namespace(&options.schema)?;
        let target = Arc::new(Target::new(url, &options)?);
        let client = target.open().await?;
        schema::prepare(&client, &namespace, &target.location()).await?;
        let (finished, _) = broadcast::channel(4096);
        let writer = Writer::new(
            Arc::clone(&target),
            &namespace,
            client,
            &options,
            finished.clone(),
        )
        .await?;
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(writer.run(queue));
        let readers = Readers::new(Arc::clone(&target), &namespace, &options);
        let clock = OffsetClock::default();
        clock.set_offset_ms(clock::measure(&readers).await?);
        let inner = Arc::new(Inner {
            jobs,
            readers,
            finished,
            location: target.location(),
            clock: clock.clone(),
        });
        tokio::spawn(clock::refresh(Arc::downgrade(&inner), clock));
        Ok(Self { inner })
    }

    /// The database's clock, as read from this machine: give it to the workers and clients
    /// on this store (`WorkerConfig::clock`), so every process agrees on when a timer is due
    /// whatever its host's clock says. Its offset is measured when connecting and every
    /// minute after.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.inner.clock.clone())
    }

    /// Where the store is: `postgres://user@host:port/database (schema NAME)`, no password.
    pub fn location(&self) -> &str {
        &self.inner.location
    }
}

impl StateStore for PostgresStore {
    async fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        self.inner.readers.load(id, with_history).await
    }

    fn commit(&self, transitions: Vec<Transition>) -> Pending<Vec<CommitOutcome>> {
        // Encoded here, on the caller's task: the writer is the bottleneck.
        let encoded = transitions.into_iter().map(Encoded::new).collect();
        let (reply, answer) = oneshot::channel();
        match encoded {
            Ok(transitions) => {
                // If the writer is gone, `reply` is dropped with the job: the answer is `Closed`.
                let _ = self.inner.jobs.send(Job { transitions, reply });
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
        Pending::new(answer)
    }

    fn finished(&self) -> Finished {
        Finished::new(self.inner.finished.subscribe())
    }

    async fn outbox(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.readers.outbox(max).await
    }

    async fn overdue_timers(&self, max: usize) -> Result<Vec<Outgoing>, StoreError> {
        self.inner.readers.overdue_timers(max).await
    }

    async fn clear_outbox(&self, ids: Vec<u64>) -> Result<(), StoreError> {
        self.inner.readers.clear_outbox(ids).await
    }
}
