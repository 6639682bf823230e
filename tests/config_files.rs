//! The configuration files shipped with the billing example, read as users read them, and a
//! file on disk with a mistake: the error names the file.

use infinitic::config::{Config, ConfigError, Deployment};
use std::time::Duration;

#[test]
fn the_embedded_example_file_keeps_the_demo_settings() {
    let config = Config::from_toml(
        include_str!("../examples/billing/embedded.toml"),
        "embedded.toml",
        [],
    )
    .unwrap();
    let Deployment::Embedded(embedded) = config.deployment() else {
        panic!("embedded expected");
    };
    assert_eq!(embedded.path.to_str(), Some("billing.db"));
    let worker = config.worker_config();
    assert_eq!(worker.retry.max_attempts, 2);
    assert_eq!(worker.retry.initial_delay, Duration::from_millis(100));
    assert_eq!(worker.workflow_lease, Duration::from_secs(2));
    assert_eq!(worker.task_lease_margin, Duration::from_secs(2));
    assert_eq!(worker.task_timeout, Duration::from_secs(5));
    assert!(config.check_build().is_ok());
}

#[test]
fn the_distributed_example_file_names_pulsar_and_postgres_and_takes_secrets_from_the_environment() {
    let env = [
        (
            "INFINITIC_POSTGRES_URL",
            "postgres://app:secret@db:5432/app",
        ),
        ("INFINITIC_PULSAR_TOKEN", "token"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let config = Config::from_toml(
        include_str!("../examples/billing/distributed.toml"),
        "distributed.toml",
        env,
    )
    .unwrap();
    let Deployment::Distributed { pulsar, postgres } = config.deployment() else {
        panic!("distributed expected");
    };
    assert_eq!(postgres.url, "postgres://app:secret@db:5432/app");
    assert_eq!(pulsar.token.as_deref(), Some("token"));
    assert_eq!(pulsar.subscription.as_deref(), Some("billing"));
    let supported = config.check_build();
    if cfg!(all(feature = "postgres", feature = "pulsar")) {
        assert!(supported.is_ok(), "{supported:?}");
    } else {
        let error = supported
            .expect_err("refused without the features")
            .to_string();
        assert!(error.contains("--features postgres,pulsar"), "{error}");
        assert!(
            error.starts_with("configuration file distributed.toml:"),
            "{error}"
        );
    }
}

#[test]
fn a_mistake_in_a_file_on_disk_is_reported_with_its_path_and_line() {
    let path = std::env::temp_dir().join(format!("infinitic-config-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[embedded]\npath = \"a.db\"\n\n[retry]\nmax_atempts = 3\n",
    )
    .unwrap();
    let error = Config::load(&path).expect_err("an unknown key");
    let _ = std::fs::remove_file(&path);
    assert!(matches!(error, ConfigError::Parse { .. }), "{error:?}");
    let error = error.to_string();
    assert!(
        error.starts_with(&format!("configuration file {}:", path.display())),
        "{error}"
    );
    assert!(
        error.contains("line 5") && error.contains("max_atempts"),
        "{error}"
    );
}
