//! From a file as written to a [`Config`]: exactly one deployment, values in range. Each
//! message names the key, and the environment variable when one set it.

use super::sections::File;
use super::{Config, ConfigError, Deployment};

/// Checks `file` (overrides applied; `overridden` lists the variables that were).
pub(super) fn config(
    file: File,
    origin: &str,
    overridden: Vec<String>,
) -> Result<Config, ConfigError> {
    let check = Checker {
        origin,
        overridden: &overridden,
    };
    let deployment = match (file.embedded, file.pulsar, file.postgres) {
        (Some(embedded), None, None) => {
            check.non_empty("embedded", "path", &embedded.path.to_string_lossy())?;
            Deployment::Embedded(embedded)
        }
        (None, Some(pulsar), Some(postgres)) => {
            check.non_empty("pulsar", "url", &pulsar.url)?;
            if !(pulsar.url.starts_with("pulsar://") || pulsar.url.starts_with("pulsar+ssl://")) {
                return Err(check.invalid(
                    "pulsar",
                    "url",
                    "must start with pulsar:// or pulsar+ssl://",
                ));
            }
            check.at_least_one("pulsar", "max_pending_sends", pulsar.max_pending_sends)?;
            check.at_least_one("pulsar", "receive_buffer", pulsar.receive_buffer)?;
            check.non_empty("postgres", "url", &postgres.url)?;
            check.at_least_one("postgres", "readers", postgres.readers)?;
            check.at_least_one("postgres", "max_batch", postgres.max_batch)?;
            if postgres.tls == Some(false) && postgres.ca_file.is_some() {
                return Err(check.invalid(
                    "postgres",
                    "ca_file",
                    "is set while `tls = false`: remove one of them",
                ));
            }
            Deployment::Distributed { pulsar, postgres }
        }
        (None, None, None) => {
            return Err(check.whole(
                "names no deployment: add [embedded] (one SQLite file, no server) or [pulsar] and [postgres] (distributed)",
            ))
        }
        (Some(_), _, _) => {
            return Err(check.whole(
                "names two deployments: [embedded] and [pulsar]/[postgres]; keep one",
            ))
        }
        (None, Some(_), None) => {
            return Err(check.whole(
                "[pulsar] needs [postgres]: the distributed deployment keeps workflow state in PostgreSQL",
            ))
        }
        (None, None, Some(_)) => {
            return Err(check.whole(
                "[postgres] needs [pulsar]: the distributed deployment carries messages on Apache Pulsar",
            ))
        }
    };
    let w = &file.worker;
    check.at_least_one("worker", "service_concurrency", w.service_concurrency)?;
    check.at_least_one("worker", "cache_capacity", w.cache_capacity)?;
    check.at_least_one("worker", "workflow_batch", w.workflow_batch)?;
    check.at_least_one("worker", "commits_in_flight", w.commits_in_flight)?;
    let r = &file.retry;
    check.at_least_one("retry", "max_attempts", r.max_attempts.map(|n| n as usize))?;
    if let Some(m) = r.multiplier {
        if !(m.is_finite() && m >= 1.0) {
            return Err(check.invalid("retry", "multiplier", "must be a number of at least 1"));
        }
    }
    if let Some(j) = r.jitter {
        if !(0.0..=1.0).contains(&j) {
            return Err(check.invalid("retry", "jitter", "must be between 0 and 1"));
        }
    }
    check.at_least_one("limits", "max_payload_bytes", file.limits.max_payload_bytes)?;
    check.at_least_one("limits", "max_depth", file.limits.max_depth)?;
    let config = Config {
        origin: origin.to_string(),
        deployment,
        worker: file.worker,
        retry: file.retry,
        limits: file.limits,
        overridden: overridden.clone(),
    };
    let retry = config.retry_policy();
    if retry.initial_delay > retry.max_delay {
        return Err(check.invalid(
            "retry",
            "initial_delay",
            &format!(
                "({:?}) is longer than max_delay ({:?})",
                retry.initial_delay, retry.max_delay
            ),
        ));
    }
    Ok(config)
}

struct Checker<'a> {
    origin: &'a str,
    overridden: &'a [String],
}

impl Checker<'_> {
    fn whole(&self, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            reason: reason.to_string(),
        }
    }

    /// `[section] key <reason>`, plus the variable that set it, if one did.
    fn invalid(&self, section: &str, key: &str, reason: &str) -> ConfigError {
        let variable = format!("INFINITIC_{section}_{key}").to_uppercase();
        let from = match self.overridden.contains(&variable) {
            true => format!(" (set by the environment variable {variable})"),
            false => String::new(),
        };
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            reason: format!("[{section}] {key}{from} {reason}"),
        }
    }

    fn non_empty(&self, section: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        match value.trim().is_empty() {
            true => Err(self.invalid(section, key, "is empty")),
            false => Ok(()),
        }
    }

    fn at_least_one(
        &self,
        section: &str,
        key: &str,
        value: Option<usize>,
    ) -> Result<(), ConfigError> {
        match value {
            Some(0) => Err(self.invalid(section, key, "must be at least 1")),
            _ => Ok(()),
        }
    }
}
