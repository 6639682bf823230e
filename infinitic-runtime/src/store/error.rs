//! What can go wrong in a store or a transport, and whether trying again can help.

use super::WorkflowState;
use infinitic_core::WorkflowId;

/// A storage or transport failure.
///
/// [`StoreError::is_transient`] tells whether trying again later may succeed: workers retry
/// those with backoff and never dead-letter a message because of them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No database at the path.
    #[error("no database at {path}: start a worker first (it creates it) or check the path")]
    Missing {
        /// The path.
        path: String,
    },
    /// The file is not a usable database.
    #[error("{path} is not an infinitic database: {reason}")]
    Corrupt {
        /// The path.
        path: String,
        /// What SQLite said.
        reason: String,
    },
    /// Written by another schema version.
    #[error("{path} has schema version {found}; this build uses {expected}")]
    SchemaVersion {
        /// The path.
        path: String,
        /// The file's version.
        found: i64,
        /// This build's version.
        expected: i64,
    },
    /// Nothing of the operation was applied, for a reason that may pass: the disk is full, an
    /// I/O error, or another process held the database locked for longer than the busy
    /// timeout. Try again later.
    #[error("the store is unavailable, nothing was applied (try again later): {0}")]
    Unavailable(String),
    /// The operation may or may not have been applied: its commit is visible, but the fsync
    /// that makes it durable failed. Retry only what is idempotent: start a workflow again
    /// with the same id (`Client::dispatch_with_id`), never with a fresh one.
    #[error("outcome unknown, the change may or may not be durable: {0}")]
    OutcomeUnknown(String),
    /// An earlier fsync failed, so this handle can no longer tell what is on disk: it refuses
    /// every operation until the store is opened again (after a restart of the process, as
    /// the operating system may report a lost write only once).
    #[error("the store refuses operations after a failed fsync; open it again: {0}")]
    Broken(String),
    /// A stored instance cannot be decoded: damaged, or written by an incompatible build.
    #[error("workflow {id}: its stored {what} cannot be decoded: {reason}")]
    Undecodable {
        /// The instance.
        id: WorkflowId,
        /// Its stored version, when that much could be read.
        version: Option<u64>,
        /// Its state, when that much could be decoded.
        state: Option<WorkflowState>,
        /// Which part (`state`, `header`, `history`, ...).
        what: String,
        /// The decoder's message.
        reason: String,
    },
    /// A database error that trying again will not fix.
    #[error("database error: {0}")]
    Database(String),
    /// The store was shut down.
    #[error("the store is closed")]
    Closed,
    /// The message broker cannot be used as configured: unreachable at startup, credentials
    /// refused, TLS misconfigured, a topic name it rejects. Trying again will not help until
    /// the configuration or the broker is fixed.
    #[error("message broker: {0}")]
    Broker(String),
    /// A message is larger than the transport accepts; nothing of the publish was sent. It
    /// will never fit: do not retry it.
    #[error("a message for {topic} is {size} bytes, above the transport's limit of {limit} bytes: nothing was published")]
    TooLarge {
        /// Its topic.
        topic: String,
        /// Its size as the transport counts it (payload and key).
        size: usize,
        /// The transport's limit ([`super::Transport::max_message_bytes`]).
        limit: usize,
    },
}

impl StoreError {
    /// Whether the same operation may succeed if tried again later (nothing of it applied).
    ///
    /// ```
    /// use infinitic_runtime::store::StoreError;
    /// assert!(StoreError::Unavailable("database is locked".into()).is_transient());
    /// assert!(!StoreError::Database("no such table".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// A short name of the kind of error, for grouping log lines.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Missing { .. } => "missing",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::SchemaVersion { .. } => "schema version",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::OutcomeUnknown(_) => "outcome unknown",
            StoreError::Broken(_) => "broken",
            StoreError::Undecodable { .. } => "undecodable",
            StoreError::Database(_) => "database",
            StoreError::Closed => "closed",
            StoreError::Broker(_) => "broker",
            StoreError::TooLarge { .. } => "too large",
        }
    }
}
