//! Configuration by file: one TOML file names the deployment (an embedded SQLite file, or
//! Apache Pulsar + PostgreSQL) and tunes workers, retries and payload limits; environment
//! variables override any value, so secrets need not be in the file.
//!
//! ```toml
//! # Exactly one deployment: [embedded], or [pulsar] and [postgres] together.
//! [embedded]
//! path = "billing.db"             # durability = "full", busy_timeout = "30s"
//!
//! # [pulsar]
//! # url = "pulsar://127.0.0.1:6650" # token, tls_ca, tls_allow_insecure, subscription,
//! #                                 # namespace, topic_prefix, startup_timeout, operation_timeout,
//! #                                 # max_pending_sends, receive_buffer, broker_max_message_bytes
//! # [postgres]
//! # url = "postgres://app@db:5432/app" # schema, tls, ca_file, readers, connect_timeout,
//! #                                    # consumed_retention, max_batch, outbox_claim,
//! #                                    # timer_grace
//!
//! [worker]        # service_concurrency, task_timeout, cache_capacity, workflow_batch,
//! task_timeout = "5s" # commits_in_flight, poll_interval, workflow_lease, task_lease_margin
//!
//! [retry]         # max_attempts, initial_delay, multiplier, max_delay, jitter
//! max_attempts = 2
//!
//! [limits]        # max_payload_bytes, max_depth
//! ```
//!
//! - Durations are strings with a unit: `"500ms"`, `"60s"`, `"5m"`, `"2h"`, `"7d"`
//!   ([`parse_duration`]). Relative paths are relative to the working directory.
//! - A key left out takes the runtime's default ([`WorkerConfig::default`],
//!   [`RetryPolicy::default`], [`Limits::default`], `PulsarOptions::new`,
//!   `PostgresOptions::default`).
//! - An unknown key, a value of the wrong type and a missing required key are errors naming the
//!   file, the line and the key; so are values out of range (a concurrency of 0, say).
//! - **Environment overrides**: `INFINITIC_<SECTION>_<KEY>` replaces `key` of `[section]`
//!   (`INFINITIC_PULSAR_TOKEN`, `INFINITIC_POSTGRES_URL`, `INFINITIC_WORKER_SERVICE_CONCURRENCY`,
//!   `INFINITIC_RETRY_MAX_ATTEMPTS`, ...), read as the key's type without quotes. An empty
//!   value counts as unset. The deployment sections are overridden only when the file has
//!   them. A variable under `INFINITIC_EMBEDDED_`, `_POSTGRES_`, `_WORKER_`, `_RETRY_` or
//!   `_LIMITS_` that names no key is an error (a typo); `INFINITIC_PULSAR_` is shared with the
//!   broker scripts, so unknown names there are left alone.
//!
//! ```
//! use infinitic_runtime::config::{Config, Deployment};
//! use std::time::Duration;
//! let text = r#"
//!     [embedded]
//!     path = "app.db"
//!     [worker]
//!     task_timeout = "5s"
//! "#;
//! let env = [("INFINITIC_WORKER_SERVICE_CONCURRENCY".to_string(), "8".to_string())];
//! let config = Config::from_toml(text, "app.toml", env)?;
//! assert!(matches!(config.deployment(), Deployment::Embedded(e) if e.path.ends_with("app.db")));
//! let worker = config.worker_config();
//! assert_eq!(worker.task_timeout, Duration::from_secs(5));
//! assert_eq!(worker.service_concurrency, 8);
//! # Ok::<(), infinitic_runtime::config::ConfigError>(())
//! ```

mod backends;
mod duration;
mod env;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use duration::parse_duration;
pub use sections::{
    EmbeddedDurability, EmbeddedSection, LimitsSection, PostgresSection, PulsarSection,
    RetrySection, WorkerSection,
};

use crate::worker::WorkerConfig;
use infinitic_core::{Limits, RetryPolicy};
use std::path::Path;

/// Why a configuration could not be read. Every message names where the problem is: the file
/// (and line), or the environment variable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read the configuration file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The system's reason.
        reason: String,
    },
    /// The file is not valid TOML, or has an unknown key, a missing key, a value of the wrong
    /// type.
    #[error("configuration file {origin}: {reason}")]
    Parse {
        /// The file.
        origin: String,
        /// The parser's message, with the line and the key.
        reason: String,
    },
    /// A value is out of range, or the sections do not name exactly one deployment.
    #[error("configuration file {origin}: {reason}")]
    Invalid {
        /// The file.
        origin: String,
        /// What is wrong, naming the key (and the variable, when one set it).
        reason: String,
    },
    /// An environment override could not be read as its key's type, or names no key.
    #[error("environment variable {variable}: {reason}")]
    Environment {
        /// The variable.
        variable: String,
        /// What is wrong.
        reason: String,
    },
    /// The file names a deployment this build cannot run (a cargo feature is off).
    #[error("configuration file {origin}: {reason}")]
    Unsupported {
        /// The file.
        origin: String,
        /// What is missing and how to get it.
        reason: String,
    },
}

/// Where workflows run: the deployment a file names.
// One value per process, read once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Deployment {
    /// `[embedded]`: one SQLite file, transport and state store at once.
    Embedded(EmbeddedSection),
    /// `[pulsar]` and `[postgres]`: messages on Apache Pulsar, workflow state in PostgreSQL.
    Distributed {
        /// The transport.
        pulsar: PulsarSection,
        /// The state store.
        postgres: PostgresSection,
    },
}

impl Deployment {
    /// `"embedded"` or `"distributed"`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Deployment::Embedded(_) => "embedded",
            Deployment::Distributed { .. } => "distributed",
        }
    }
}

/// A validated configuration: one deployment, and the workers' settings.
#[derive(Clone, Debug)]
pub struct Config {
    origin: String,
    deployment: Deployment,
    worker: WorkerSection,
    retry: RetrySection,
    limits: LimitsSection,
    overridden: Vec<String>,
}

impl Config {
    /// Reads the file at `path` and applies the process's environment overrides.
    ///
    /// ```no_run
    /// use infinitic_runtime::config::Config;
    /// let config = Config::load("examples/billing/embedded.toml")?;
    /// tracing::info!(deployment = config.deployment().name(), "configuration loaded");
    /// # Ok::<(), infinitic_runtime::config::ConfigError>(())
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string(), process_environment()?)
    }

    /// Reads `text` (`origin` names it in errors) and applies the process's environment
    /// overrides, as [`Config::load`] does for a file: for a configuration built into a binary.
    ///
    /// ```
    /// use infinitic_runtime::config::Config;
    /// let config = Config::from_toml_and_env("[embedded]\npath = \"app.db\"", "built in")?;
    /// assert_eq!(config.origin(), "built in");
    /// # Ok::<(), infinitic_runtime::config::ConfigError>(())
    /// ```
    pub fn from_toml_and_env(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::from_toml(text, origin, process_environment()?)
    }

    /// Reads `text` (a file's content; `origin` names it in errors) and applies the overrides
    /// among `vars` (name, value pairs; other variables are ignored). Tests give their own
    /// variables; [`Config::load`] gives the process's.
    pub fn from_toml(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut file: sections::File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        let overridden = env::apply(&mut file, vars)?;
        if !overridden.is_empty() {
            tracing::debug!(
                origin,
                ?overridden,
                "configuration overridden by the environment"
            );
        }
        validate::config(file, origin, overridden)
    }

    /// The file the configuration came from (as given), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The deployment.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The deployment, to change from the command line (say, another database path).
    pub fn deployment_mut(&mut self) -> &mut Deployment {
        &mut self.deployment
    }

    /// The environment variables that replaced a value of the file, sorted.
    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    /// `[worker]`, `[retry]` and `[limits]` as a worker's configuration; the rest of
    /// [`WorkerConfig`] (the clock) at its default.
    pub fn worker_config(&self) -> WorkerConfig {
        let defaults = WorkerConfig::default();
        let w = &self.worker;
        WorkerConfig {
            service_concurrency: w
                .service_concurrency
                .unwrap_or(defaults.service_concurrency),
            retry: self.retry_policy(),
            task_timeout: w.task_timeout.unwrap_or(defaults.task_timeout),
            cache_capacity: w.cache_capacity.unwrap_or(defaults.cache_capacity),
            workflow_batch: w.workflow_batch.unwrap_or(defaults.workflow_batch),
            commits_in_flight: w.commits_in_flight.unwrap_or(defaults.commits_in_flight),
            poll_interval: w.poll_interval.unwrap_or(defaults.poll_interval),
            workflow_lease: w.workflow_lease.unwrap_or(defaults.workflow_lease),
            task_lease_margin: w.task_lease_margin.unwrap_or(defaults.task_lease_margin),
            limits: self.limits(),
            ..defaults
        }
    }

    /// `[retry]` as a policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        let defaults = RetryPolicy::default();
        let r = &self.retry;
        RetryPolicy {
            max_attempts: r.max_attempts.unwrap_or(defaults.max_attempts),
            initial_delay: r.initial_delay.unwrap_or(defaults.initial_delay),
            multiplier: r.multiplier.unwrap_or(defaults.multiplier),
            max_delay: r.max_delay.unwrap_or(defaults.max_delay),
            jitter: r.jitter.unwrap_or(defaults.jitter),
        }
    }

    /// `[limits]`: give a client the workers' limits (`Client::with_limits`).
    pub fn limits(&self) -> Limits {
        let defaults = Limits::default();
        Limits {
            max_payload_bytes: self
                .limits
                .max_payload_bytes
                .unwrap_or(defaults.max_payload_bytes),
            max_depth: self.limits.max_depth.unwrap_or(defaults.max_depth),
        }
    }

    /// Checks that this build can run the file's deployment: the distributed one needs the
    /// cargo features `pulsar` and `postgres` (of `infinitic`, or of this crate).
    ///
    /// ```
    /// use infinitic_runtime::config::Config;
    /// let text = "[pulsar]\nurl = \"pulsar://b:6650\"\n[postgres]\nurl = \"postgres://db/a\"";
    /// let config = Config::from_toml(text, "d.toml", [])?;
    /// let supported = config.check_build();
    /// assert_eq!(supported.is_ok(), cfg!(all(feature = "pulsar", feature = "postgres")));
    /// # Ok::<(), infinitic_runtime::config::ConfigError>(())
    /// ```
    pub fn check_build(&self) -> Result<(), ConfigError> {
        let Deployment::Distributed { .. } = self.deployment else {
            return Ok(());
        };
        let features = [
            ("postgres", cfg!(feature = "postgres")),
            ("pulsar", cfg!(feature = "pulsar")),
        ];
        let missing: Vec<&str> = features
            .iter()
            .filter(|(_, on)| !on)
            .map(|(name, _)| *name)
            .collect();
        match missing.is_empty() {
            true => Ok(()),
            false => Err(ConfigError::Unsupported {
                origin: self.origin.clone(),
                reason: format!(
                    "names the distributed deployment (Apache Pulsar + PostgreSQL), which this \
                     build cannot run: the cargo feature(s) `{}` are off; build with \
                     `--features postgres,pulsar`",
                    missing.join("`, `")
                ),
            }),
        }
    }
}

/// The process's variables that start with `INFINITIC_`; one whose value is not UTF-8 is an
/// error rather than skipped (it would look unset).
fn process_environment() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with("INFINITIC_")) else {
            continue;
        };
        let value = value.into_string().map_err(|_| ConfigError::Environment {
            variable: name.to_string(),
            reason: "the value is not UTF-8".into(),
        })?;
        vars.push((name.to_string(), value));
    }
    Ok(vars)
}
