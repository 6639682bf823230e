//! The sections of a configuration file, as written. Every setting is optional except what
//! names a deployment (a path, URLs): an absent one takes the runtime's own default
//! ([`crate::worker::WorkerConfig::default`], `PulsarOptions::new`, `PostgresOptions::default`),
//! so the defaults live in one place.

use super::duration;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file. Private: [`super::Config`] is what callers see once it is validated.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) embedded: Option<EmbeddedSection>,
    pub(super) pulsar: Option<PulsarSection>,
    pub(super) postgres: Option<PostgresSection>,
    #[serde(default)]
    pub(super) worker: WorkerSection,
    #[serde(default)]
    pub(super) retry: RetrySection,
    #[serde(default)]
    pub(super) limits: LimitsSection,
}

/// `[embedded]`: the embedded deployment, one SQLite file that is transport and state store.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSection {
    /// `path`: the database file (relative to the working directory). Required.
    pub path: PathBuf,
    /// `durability`: `"full"` (the default: answered after fsync) or `"full_before_visible"`
    /// (no other process reads a commit before it is on disk).
    pub durability: Option<EmbeddedDurability>,
    /// `busy_timeout`: how long an operation waits for a lock held by another process.
    #[serde(default, deserialize_with = "duration::option")]
    pub busy_timeout: Option<Duration>,
}

/// `[embedded] durability`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddedDurability {
    /// `"full"`.
    Full,
    /// `"full_before_visible"`.
    FullBeforeVisible,
}

/// `[pulsar]`: the Apache Pulsar transport of the distributed deployment (with `[postgres]`).
/// Each key is the `PulsarOptions` field of the same name.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PulsarSection {
    /// `url`: `pulsar://host:6650` or `pulsar+ssl://host:6651`. Required.
    pub url: String,
    /// `token`: a JWT for token authentication (better from `INFINITIC_PULSAR_TOKEN`).
    pub token: Option<String>,
    /// `tls_ca`: PEM file of the CA that signed the broker's certificate.
    pub tls_ca: Option<PathBuf>,
    /// `tls_allow_insecure`: accept a certificate that does not verify.
    pub tls_allow_insecure: Option<bool>,
    /// `subscription`: shared by every worker of one deployment.
    pub subscription: Option<String>,
    /// `namespace`: `tenant/namespace` of the topics.
    pub namespace: Option<String>,
    /// `topic_prefix`: first segment of every topic name.
    pub topic_prefix: Option<String>,
    /// `startup_timeout`: how long connecting may take.
    #[serde(default, deserialize_with = "duration::option")]
    pub startup_timeout: Option<Duration>,
    /// `operation_timeout`: how long one publish or consumer operation may take.
    #[serde(default, deserialize_with = "duration::option")]
    pub operation_timeout: Option<Duration>,
    /// `max_pending_sends`: unconfirmed publishes at most (back-pressure).
    pub max_pending_sends: Option<usize>,
    /// `receive_buffer`: messages buffered per topic at most.
    pub receive_buffer: Option<usize>,
    /// `broker_max_message_bytes`: the broker's `maxMessageSize`.
    pub broker_max_message_bytes: Option<usize>,
}

impl std::fmt::Debug for PulsarSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("PulsarSection")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca)
            .field("subscription", &self.subscription)
            .field("namespace", &self.namespace)
            .field("topic_prefix", &self.topic_prefix)
            .finish_non_exhaustive()
    }
}

/// `[postgres]`: the PostgreSQL state store of the distributed deployment (with `[pulsar]`).
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// `url`: `postgres://user:password@host:port/database`. Required; it holds the password,
    /// so it is better given by `INFINITIC_POSTGRES_URL`.
    pub url: String,
    /// `schema`: the PostgreSQL schema holding the store's tables.
    pub schema: Option<String>,
    /// `tls`: `true` to require TLS (checked against the system's CAs unless `ca_file`).
    pub tls: Option<bool>,
    /// `ca_file`: PEM file of the CA that signed the server's certificate; implies TLS.
    pub ca_file: Option<PathBuf>,
    /// `readers`: connections for loads and the outbox.
    pub readers: Option<usize>,
    /// `connect_timeout`: how long connecting may take.
    #[serde(default, deserialize_with = "duration::option")]
    pub connect_timeout: Option<Duration>,
    /// `consumed_retention`: how long consumed message ids are kept.
    #[serde(default, deserialize_with = "duration::option")]
    pub consumed_retention: Option<Duration>,
    /// `max_batch`: most transitions in one transaction.
    pub max_batch: Option<usize>,
    /// `outbox_claim`: how long an outbox entry a relay read is left to it.
    #[serde(default, deserialize_with = "duration::option")]
    pub outbox_claim: Option<Duration>,
    /// `timer_grace`: how long past its due time a timer waits for its broker message before
    /// the relay publishes it again.
    #[serde(default, deserialize_with = "duration::option")]
    pub timer_grace: Option<Duration>,
}

impl std::fmt::Debug for PostgresSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL holds the password: never in logs.
        f.debug_struct("PostgresSection")
            .field("url", &"<redacted>")
            .field("schema", &self.schema)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// `[worker]`: how workers run; each key is the [`crate::worker::WorkerConfig`] field of the
/// same name.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// `service_concurrency`: service tasks running at once.
    pub service_concurrency: Option<usize>,
    /// `task_timeout`: time limit of one task attempt.
    #[serde(default, deserialize_with = "duration::option")]
    pub task_timeout: Option<Duration>,
    /// `cache_capacity`: live workflow instances kept in memory.
    pub cache_capacity: Option<usize>,
    /// `workflow_batch`: workflow events per commit.
    pub workflow_batch: Option<usize>,
    /// `commits_in_flight`: batches committing while the next is computed.
    pub commits_in_flight: Option<usize>,
    /// `poll_interval`: how often to look for messages of other processes.
    #[serde(default, deserialize_with = "duration::option")]
    pub poll_interval: Option<Duration>,
    /// `workflow_lease`: after a crash, workflow events come again once this has passed.
    #[serde(default, deserialize_with = "duration::option")]
    pub workflow_lease: Option<Duration>,
    /// `task_lease_margin`: a task stays leased for `task_timeout` plus this.
    #[serde(default, deserialize_with = "duration::option")]
    pub task_lease_margin: Option<Duration>,
}

/// `[retry]`: the retry policy of failed task attempts ([`infinitic_core::RetryPolicy`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// `max_attempts`: attempts in all, the first included (1 = never retry).
    pub max_attempts: Option<u32>,
    /// `initial_delay`: delay before the second attempt.
    #[serde(default, deserialize_with = "duration::option")]
    pub initial_delay: Option<Duration>,
    /// `multiplier`: factor between consecutive delays (at least 1).
    pub multiplier: Option<f64>,
    /// `max_delay`: upper bound of a delay.
    #[serde(default, deserialize_with = "duration::option")]
    pub max_delay: Option<Duration>,
    /// `jitter`: random spread as a fraction of the delay, from 0 to 1.
    pub jitter: Option<f64>,
}

/// `[limits]`: payload limits ([`infinitic_core::Limits`]); give clients and workers the same.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// `max_payload_bytes`: largest encoded payload.
    pub max_payload_bytes: Option<usize>,
    /// `max_depth`: deepest nesting of a payload's values.
    pub max_depth: Option<usize>,
}
