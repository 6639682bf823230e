//! Parsing, errors and overrides of configuration files.

use super::sections::File;
use super::*;
use std::time::Duration;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", vars(env))
}

fn message(text: &str, env: &[(&str, &str)]) -> String {
    parse(text, env).expect_err("an error").to_string()
}

const DISTRIBUTED: &str = r#"
[pulsar]
url = "pulsar://127.0.0.1:6650"
subscription = "billing"
[postgres]
url = "postgres://app:pw@127.0.0.1:5432/app"
schema = "billing"
"#;

/// Every key of every section, once: the file format in full.
const EVERY_KEY: &str = r#"
[embedded]
path = "a.db"
durability = "full_before_visible"
busy_timeout = "3s"
[pulsar]
url = "pulsar+ssl://broker:6651"
token = "t"
tls_ca = "ca.pem"
tls_allow_insecure = true
subscription = "s"
namespace = "tenant/ns"
topic_prefix = "p"
startup_timeout = "1s"
operation_timeout = "2s"
max_pending_sends = 3
receive_buffer = 4
broker_max_message_bytes = 5
[postgres]
url = "postgres://db/app"
schema = "sc"
tls = true
ca_file = "pg.pem"
readers = 2
connect_timeout = "3s"
consumed_retention = "1d"
max_batch = 9
outbox_claim = "10s"
timer_grace = "30s"
[worker]
service_concurrency = 1
task_timeout = "2s"
cache_capacity = 3
workflow_batch = 4
commits_in_flight = 5
poll_interval = "6ms"
workflow_lease = "7s"
task_lease_margin = "8s"
[retry]
max_attempts = 1
initial_delay = "1s"
multiplier = 1.5
max_delay = "2s"
jitter = 0.1
[limits]
max_payload_bytes = 1
max_depth = 2
"#;

#[test]
fn an_embedded_file_gives_its_path_and_worker_settings_over_the_runtime_defaults() {
    let config = parse(
        "[embedded]\npath = \"billing.db\"\n[worker]\ntask_timeout = \"5s\"\n[retry]\nmax_attempts = 2\ninitial_delay = \"100ms\"",
        &[],
    )
    .unwrap();
    let Deployment::Embedded(embedded) = config.deployment() else {
        panic!("embedded expected: {:?}", config.deployment());
    };
    assert_eq!(embedded.path.to_str(), Some("billing.db"));
    let worker = config.worker_config();
    let defaults = WorkerConfig::default();
    assert_eq!(worker.task_timeout, Duration::from_secs(5));
    assert_eq!(worker.retry.max_attempts, 2);
    assert_eq!(worker.retry.initial_delay, Duration::from_millis(100));
    // Unset keys keep the runtime's defaults.
    assert_eq!(worker.service_concurrency, defaults.service_concurrency);
    assert_eq!(worker.retry.max_delay, RetryPolicy::default().max_delay);
    assert_eq!(worker.limits, Limits::default());
    assert_eq!(config.deployment().name(), "embedded");
}

#[test]
fn a_distributed_file_names_both_backends() {
    let config = parse(DISTRIBUTED, &[]).unwrap();
    let Deployment::Distributed { pulsar, postgres } = config.deployment() else {
        panic!("distributed expected");
    };
    assert_eq!(pulsar.subscription.as_deref(), Some("billing"));
    assert_eq!(postgres.schema.as_deref(), Some("billing"));
    assert_eq!(config.deployment().name(), "distributed");
}

#[test]
fn every_key_of_the_format_is_read() {
    let file: File = toml::from_str(EVERY_KEY).unwrap();
    assert_eq!(file.worker.poll_interval, Some(Duration::from_millis(6)));
    assert_eq!(file.retry.multiplier, Some(1.5));
    assert_eq!(file.limits.max_depth, Some(2));
    assert_eq!(
        file.postgres.unwrap().consumed_retention,
        Some(Duration::from_secs(86_400))
    );
    assert_eq!(file.pulsar.unwrap().broker_max_message_bytes, Some(5));
}

#[test]
fn every_key_has_exactly_one_environment_override_and_it_changes_that_key() {
    // The override table and the format agree: same keys, in both directions.
    let mut in_file: Vec<String> = Vec::new();
    let table: toml::Table = toml::from_str(EVERY_KEY).unwrap();
    for (section, keys) in &table {
        for key in keys.as_table().unwrap().keys() {
            in_file.push(format!("{section}.{key}"));
        }
    }
    let mut overridable: Vec<String> = env::keys()
        .iter()
        .map(|k| format!("{}.{}", k.section, k.key))
        .collect();
    in_file.sort();
    overridable.sort();
    assert_eq!(in_file, overridable);
    // Each variable, with a value of its key's type, changes the file (and nothing else fails).
    let base: File = toml::from_str(EVERY_KEY).unwrap();
    for key in env::keys() {
        let variable = key.variable();
        let changed = ["42", "false", "42ms", "full", "elsewhere"]
            .iter()
            .any(|value| {
                let mut file: File = toml::from_str(EVERY_KEY).unwrap();
                env::apply(&mut file, vars(&[(&variable, value)])).is_ok() && file != base
            });
        assert!(changed, "{variable} changes nothing");
    }
}

#[test]
fn overrides_replace_values_of_the_file_as_the_keys_types() {
    let config = parse(
        DISTRIBUTED,
        &[
            ("INFINITIC_PULSAR_URL", "pulsar://10.0.0.1:6650"),
            ("INFINITIC_PULSAR_TOKEN", "12345"), // a number-looking secret stays a string
            ("INFINITIC_POSTGRES_URL", "postgres://app:secret@db/app"),
            ("INFINITIC_WORKER_SERVICE_CONCURRENCY", "128"),
            ("INFINITIC_WORKER_TASK_TIMEOUT", "90s"),
            ("INFINITIC_RETRY_JITTER", "0.5"),
            ("INFINITIC_LIMITS_MAX_DEPTH", "64"),
            ("INFINITIC_PULSAR_RUN", "/tmp/broker"), // the broker scripts' own: left alone
            ("PATH", "/usr/bin"),
        ],
    )
    .unwrap();
    let Deployment::Distributed { pulsar, postgres } = config.deployment() else {
        panic!("distributed expected");
    };
    assert_eq!(pulsar.url, "pulsar://10.0.0.1:6650");
    assert_eq!(pulsar.token.as_deref(), Some("12345"));
    assert_eq!(postgres.url, "postgres://app:secret@db/app");
    let worker = config.worker_config();
    assert_eq!(worker.service_concurrency, 128);
    assert_eq!(worker.task_timeout, Duration::from_secs(90));
    assert_eq!(worker.retry.jitter, 0.5);
    assert_eq!(worker.limits.max_depth, 64);
    assert_eq!(config.overridden().len(), 7);
    assert!(config
        .overridden()
        .contains(&"INFINITIC_PULSAR_TOKEN".to_string()));
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let config = parse(DISTRIBUTED, &[("INFINITIC_PULSAR_URL", "")]).unwrap();
    let Deployment::Distributed { pulsar, .. } = config.deployment() else {
        panic!("distributed expected");
    };
    assert_eq!(pulsar.url, "pulsar://127.0.0.1:6650");
    assert!(config.overridden().is_empty());
}

#[test]
fn overrides_of_a_deployment_the_file_does_not_name_are_ignored() {
    let config = parse(
        "[embedded]\npath = \"a.db\"",
        &[
            ("INFINITIC_PULSAR_URL", "pulsar://elsewhere:6650"),
            ("INFINITIC_POSTGRES_URL", "postgres://elsewhere/app"),
        ],
    )
    .unwrap();
    assert_eq!(config.deployment().name(), "embedded");
    assert!(config.overridden().is_empty());
    // A tuning section is overridden even when the file leaves it out.
    let config = parse(
        "[embedded]\npath = \"a.db\"",
        &[("INFINITIC_RETRY_MAX_ATTEMPTS", "9")],
    )
    .unwrap();
    assert_eq!(config.retry_policy().max_attempts, 9);
}

#[test]
fn a_bad_override_names_the_variable_and_what_it_should_be() {
    let error = message(DISTRIBUTED, &[("INFINITIC_WORKER_TASK_TIMEOUT", "60")]);
    assert!(
        error.starts_with("environment variable INFINITIC_WORKER_TASK_TIMEOUT:"),
        "{error}"
    );
    assert!(error.contains("\"60s\""), "{error}");
    let error = message(
        DISTRIBUTED,
        &[("INFINITIC_WORKER_SERVICE_CONCURRENCY", "many")],
    );
    assert!(error.contains("`many` is not a whole number"), "{error}");
    let error = message(
        DISTRIBUTED,
        &[("INFINITIC_PULSAR_TLS_ALLOW_INSECURE", "yes")],
    );
    assert!(error.contains("not `true` or `false`"), "{error}");
}

#[test]
fn a_misspelt_override_under_our_prefixes_is_an_error_listing_the_keys() {
    let error = message(DISTRIBUTED, &[("INFINITIC_WORKER_CONCURRENCY", "8")]);
    assert!(error.contains("INFINITIC_WORKER_CONCURRENCY"), "{error}");
    assert!(
        error.contains("INFINITIC_WORKER_SERVICE_CONCURRENCY"),
        "{error}"
    );
    assert!(
        !error.contains("INFINITIC_RETRY_"),
        "only [worker]'s keys: {error}"
    );
}

#[test]
fn an_out_of_range_value_set_by_a_variable_names_the_variable() {
    let error = message(DISTRIBUTED, &[("INFINITIC_WORKER_CACHE_CAPACITY", "0")]);
    assert_eq!(
        error,
        "configuration file test.toml: [worker] cache_capacity (set by the environment variable \
         INFINITIC_WORKER_CACHE_CAPACITY) must be at least 1"
    );
}

#[test]
fn an_unknown_key_is_an_error_naming_the_file_the_line_and_the_key() {
    let error = message(
        "[embedded]\npath = \"a.db\"\n[worker]\nconcurrency = 4\n",
        &[],
    );
    assert!(
        error.starts_with("configuration file test.toml:"),
        "{error}"
    );
    assert!(error.contains("line 4"), "{error}");
    assert!(error.contains("unknown field `concurrency`"), "{error}");
    let error = message("[embeded]\npath = \"a.db\"\n", &[]);
    assert!(error.contains("unknown field `embeded`"), "{error}");
}

#[test]
fn a_value_of_the_wrong_type_or_a_missing_key_is_an_error_naming_the_key() {
    let error = message(
        "[embedded]\npath = \"a.db\"\n[worker]\ntask_timeout = 60\n",
        &[],
    );
    assert!(
        error.contains("line 4") && error.contains("task_timeout"),
        "{error}"
    );
    let error = message(
        "[embedded]\npath = \"a.db\"\n[worker]\ntask_timeout = \"60\"\n",
        &[],
    );
    assert!(error.contains("\"500ms\""), "{error}");
    let error = message(
        "[embedded]\npath = \"a.db\"\n[retry]\nmax_attempts = -1\n",
        &[],
    );
    assert!(error.contains("max_attempts"), "{error}");
    let error = message("[embedded]\n", &[]);
    assert!(error.contains("missing field `path`"), "{error}");
    let error = message("[embedded\npath = \"a.db\"\n", &[]);
    assert!(error.contains("line 1"), "{error}");
}

#[test]
fn a_file_must_name_exactly_one_deployment() {
    assert!(message("", &[]).contains("names no deployment"));
    assert!(message("[worker]\nservice_concurrency = 2", &[]).contains("names no deployment"));
    let both = format!("[embedded]\npath = \"a.db\"\n{DISTRIBUTED}");
    assert!(message(&both, &[]).contains("names two deployments"));
    assert!(
        message("[pulsar]\nurl = \"pulsar://b:6650\"", &[]).contains("[pulsar] needs [postgres]")
    );
    assert!(
        message("[postgres]\nurl = \"postgres://db/a\"", &[]).contains("[postgres] needs [pulsar]")
    );
}

#[test]
fn values_out_of_range_are_named() {
    let embedded = "[embedded]\npath = \"a.db\"\n";
    for (extra, expected) in [
        (
            "[worker]\nservice_concurrency = 0",
            "[worker] service_concurrency must be at least 1",
        ),
        (
            "[worker]\ncommits_in_flight = 0",
            "[worker] commits_in_flight must be at least 1",
        ),
        (
            "[retry]\nmax_attempts = 0",
            "[retry] max_attempts must be at least 1",
        ),
        (
            "[retry]\nmultiplier = 0.5",
            "[retry] multiplier must be a number of at least 1",
        ),
        (
            "[retry]\njitter = 2.0",
            "[retry] jitter must be between 0 and 1",
        ),
        (
            "[retry]\ninitial_delay = \"2m\"",
            "[retry] initial_delay (120s) is longer than max_delay (60s)",
        ),
        (
            "[limits]\nmax_depth = 0",
            "[limits] max_depth must be at least 1",
        ),
    ] {
        let error = message(&format!("{embedded}{extra}"), &[]);
        assert!(error.ends_with(expected), "{extra}: {error}");
    }
    let error = message("[embedded]\npath = \"\"", &[]);
    assert!(error.ends_with("[embedded] path is empty"), "{error}");
    let error = message(&DISTRIBUTED.replace("pulsar://", "http://"), &[]);
    assert!(
        error.contains("[pulsar] url must start with pulsar://"),
        "{error}"
    );
    let error = message(
        &format!("{DISTRIBUTED}tls = false\nca_file = \"ca.pem\""),
        &[],
    );
    assert!(
        error.contains("[postgres] ca_file is set while `tls = false`"),
        "{error}"
    );
}

#[test]
fn a_missing_file_is_an_error_naming_its_path() {
    let error = Config::load("/nonexistent/infinitic.toml").expect_err("missing");
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    let error = error.to_string();
    assert!(
        error.starts_with("cannot read the configuration file /nonexistent/infinitic.toml:"),
        "{error}"
    );
}

#[test]
fn secrets_are_not_in_debug_output() {
    let config = parse(
        DISTRIBUTED,
        &[
            ("INFINITIC_PULSAR_TOKEN", "tok-secret"),
            ("INFINITIC_POSTGRES_URL", "postgres://u:pw-secret@db/a"),
        ],
    )
    .unwrap();
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("tok-secret") && !debug.contains("pw-secret"),
        "{debug}"
    );
}
