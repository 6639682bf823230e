//! Environment overrides: `INFINITIC_<SECTION>_<KEY>` (upper case) replaces `key` of
//! `[section]`, as `INFINITIC_WORKER_SERVICE_CONCURRENCY=128` or `INFINITIC_PULSAR_TOKEN=...`.
//!
//! - The value is read as the key's type (a duration as `"60s"`, a number, `true`/`false`,
//!   a string as is: no quotes), so a token that looks like a number stays a string.
//! - An empty value counts as unset.
//! - The deployment sections (`embedded`, `pulsar`, `postgres`) are overridden only when the
//!   file has them: one environment (say, a token and a URL exported in a shell) can serve an
//!   embedded and a distributed file alike, and never turns one into the other.
//! - A variable under a prefix of ours that names no key is an error (a typo would otherwise be
//!   silently ignored), except under `INFINITIC_PULSAR_`, which the broker scripts also use
//!   (`INFINITIC_PULSAR_RUN`, `INFINITIC_PULSAR_ADMIN_URL`, ...).

use super::sections::{EmbeddedDurability, File};
use super::ConfigError;
use std::path::PathBuf;
use std::time::Duration;

/// A key that can be overridden, and how.
pub(super) struct Key {
    pub(super) section: &'static str,
    pub(super) key: &'static str,
    /// Sets the key from a variable's value: `Ok(false)` when its section is not in the file.
    set: fn(&mut File, &str) -> Result<bool, String>,
}

impl Key {
    /// The variable that overrides this key.
    pub(super) fn variable(&self) -> String {
        format!("INFINITIC_{}_{}", self.section, self.key).to_uppercase()
    }
}

/// A value read from the environment as a key's type.
trait FromEnv: Sized {
    fn from_env(value: &str) -> Result<Self, String>;
}

impl FromEnv for String {
    fn from_env(value: &str) -> Result<Self, String> {
        Ok(value.to_string())
    }
}

impl FromEnv for PathBuf {
    fn from_env(value: &str) -> Result<Self, String> {
        Ok(PathBuf::from(value))
    }
}

impl FromEnv for Duration {
    fn from_env(value: &str) -> Result<Self, String> {
        super::parse_duration(value)
    }
}

impl FromEnv for bool {
    fn from_env(value: &str) -> Result<Self, String> {
        value
            .trim()
            .parse()
            .map_err(|_| format!("`{value}` is not `true` or `false`"))
    }
}

macro_rules! from_str_numbers {
    ($($number:ty: $what:literal),*) => {$(
        impl FromEnv for $number {
            fn from_env(value: &str) -> Result<Self, String> {
                value.trim().parse().map_err(|_| format!("`{value}` is not {}", $what))
            }
        }
    )*};
}
from_str_numbers!(usize: "a whole number", u32: "a whole number", f64: "a number");

impl FromEnv for EmbeddedDurability {
    fn from_env(value: &str) -> Result<Self, String> {
        match value.trim() {
            "full" => Ok(Self::Full),
            "full_before_visible" => Ok(Self::FullBeforeVisible),
            _ => Err(format!("`{value}` is not `full` or `full_before_visible`")),
        }
    }
}

/// `deployment` keys live in an optional section and are set only when it is there; `required`
/// ones are not `Option`s in it; `tuning` keys live in a section that is always there.
macro_rules! keys {
    ($($kind:ident $section:ident . $field:ident),* $(,)?) => {
        vec![$(Key {
            section: stringify!($section),
            key: stringify!($field),
            set: |file: &mut File, value: &str| keys!(@set $kind file $section $field value),
        }),*]
    };
    (@set required $file:ident $section:ident $field:ident $value:ident) => {
        match $file.$section.as_mut() {
            Some(section) => { section.$field = FromEnv::from_env($value)?; Ok(true) }
            None => Ok(false),
        }
    };
    (@set deployment $file:ident $section:ident $field:ident $value:ident) => {
        match $file.$section.as_mut() {
            Some(section) => { section.$field = Some(FromEnv::from_env($value)?); Ok(true) }
            None => Ok(false),
        }
    };
    (@set tuning $file:ident $section:ident $field:ident $value:ident) => {{
        $file.$section.$field = Some(FromEnv::from_env($value)?);
        Ok(true)
    }};
}

/// Every key of the file, in the order of the documentation.
pub(super) fn keys() -> Vec<Key> {
    keys![
        required embedded.path,
        deployment embedded.durability,
        deployment embedded.busy_timeout,
        required pulsar.url,
        deployment pulsar.token,
        deployment pulsar.tls_ca,
        deployment pulsar.tls_allow_insecure,
        deployment pulsar.subscription,
        deployment pulsar.namespace,
        deployment pulsar.topic_prefix,
        deployment pulsar.startup_timeout,
        deployment pulsar.operation_timeout,
        deployment pulsar.max_pending_sends,
        deployment pulsar.receive_buffer,
        deployment pulsar.broker_max_message_bytes,
        required postgres.url,
        deployment postgres.schema,
        deployment postgres.tls,
        deployment postgres.ca_file,
        deployment postgres.readers,
        deployment postgres.connect_timeout,
        deployment postgres.consumed_retention,
        deployment postgres.max_batch,
        deployment postgres.outbox_claim,
        deployment postgres.timer_grace,
        tuning worker.service_concurrency,
        tuning worker.task_timeout,
        tuning worker.cache_capacity,
        tuning worker.workflow_batch,
        tuning worker.commits_in_flight,
        tuning worker.poll_interval,
        tuning worker.workflow_lease,
        tuning worker.task_lease_margin,
        tuning retry.max_attempts,
        tuning retry.initial_delay,
        tuning retry.multiplier,
        tuning retry.max_delay,
        tuning retry.jitter,
        tuning limits.max_payload_bytes,
        tuning limits.max_depth,
    ]
}

/// Prefixes only this module reads: a variable under one of them that names no key is a typo.
const OURS_ALONE: [&str; 5] = [
    "INFINITIC_EMBEDDED_",
    "INFINITIC_POSTGRES_",
    "INFINITIC_WORKER_",
    "INFINITIC_RETRY_",
    "INFINITIC_LIMITS_",
];

/// Applies the overrides found in `vars` to `file`; returns the variables applied.
pub(super) fn apply(
    file: &mut File,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let keys = keys();
    let mut applied = Vec::new();
    for (name, value) in vars {
        if !name.starts_with("INFINITIC_") || value.is_empty() {
            continue;
        }
        match keys.iter().find(|key| key.variable() == name) {
            Some(key) => {
                let set = (key.set)(file, &value).map_err(|reason| ConfigError::Environment {
                    variable: name.clone(),
                    reason,
                })?;
                if set {
                    applied.push(name);
                }
            }
            None => {
                if let Some(prefix) = OURS_ALONE.iter().find(|p| name.starts_with(*p)) {
                    let section = prefix["INFINITIC_".len()..prefix.len() - 1].to_lowercase();
                    let known: Vec<String> = keys
                        .iter()
                        .filter(|key| key.section == section)
                        .map(Key::variable)
                        .collect();
                    return Err(ConfigError::Environment {
                        variable: name,
                        reason: format!(
                            "names no setting of [{section}]; known: {}",
                            known.join(", ")
                        ),
                    });
                }
            }
        }
    }
    // Deterministic order for logs, whatever the environment's.
    applied.sort();
    Ok(applied)
}
