//! The Apache Pulsar broker of the tests, started by `scripts/pulsar.sh start` (which writes
//! `INFINITIC_PULSAR_URL` to an env file) or by `scripts/test-pulsar.sh` /
//! `scripts/test-distributed.sh`. Without one a test is skipped with a message, except under
//! `CI=true`, where it fails: CI never skips.

use infinitic::store::pulsar::PulsarOptions;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The plain broker's URL, or `None` (with a message) when there is none and CI is not set.
pub fn url() -> Option<String> {
    match std::env::var("INFINITIC_PULSAR_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "Pulsar required under CI=true: run scripts/test-distributed.sh, or \
             `source $(scripts/pulsar.sh start)` before the tests"
        ),
        _ => {
            eprintln!(
                "skipped: no Pulsar broker (INFINITIC_PULSAR_URL is not set; \
                 `source $(scripts/pulsar.sh start)` first)"
            );
            None
        }
    }
}

/// Options on topics and a subscription no other run uses (topics outlive a test on the
/// broker, and a new subscription starts at their oldest message).
pub fn fresh(url: &str) -> PulsarOptions {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let unique = format!("{nanos:x}{}{n}", std::process::id());
    PulsarOptions::new(url)
        .with_topic_prefix(format!("t{unique}"))
        .with_subscription(format!("s{unique}"))
}
