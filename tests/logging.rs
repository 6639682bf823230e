//! Logging: the runtime reports through `tracing` (spans per transition and per task attempt,
//! events for retries, dead letters and parks), and panics it catches in workflow or service
//! code are not printed by the default panic hook, while every other panic still is.

use infinitic::prelude::*;
use infinitic::store::sqlite::Durability;
use infinitic::store::sqlite::OpenMode;
use infinitic::{Client, ClientError, Limits, RetryPolicy, SqliteStore, Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[service]
pub trait Shaky {
    /// Fails on its first `fail_first` calls, then returns `n`.
    async fn call(&self, n: u64, fail_first: u32) -> Result<u64, String>;
    /// Returns `len` bytes of text.
    async fn big(&self, len: u32) -> String;
    async fn explode(&self) -> u64;
}

#[derive(Clone, Default)]
struct ShakyImpl {
    calls: Arc<AtomicU32>,
}

impl Shaky for ShakyImpl {
    async fn call(&self, n: u64, fail_first: u32) -> Result<u64, String> {
        let calls = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if calls <= fail_first {
            Err(format!("failure {calls}"))
        } else {
            Ok(n)
        }
    }

    async fn big(&self, len: u32) -> String {
        "x".repeat(len as usize)
    }

    async fn explode(&self) -> u64 {
        panic!("service boom")
    }
}

#[workflow]
pub trait Cases {
    async fn run(&self, case: u8) -> String;
}

#[derive(Default)]
pub struct CasesImpl {
    shaky: ShakyStub,
}

#[workflow]
impl Cases for CasesImpl {
    async fn run(&self, case: u8) -> String {
        match case {
            0 => format!("{:?}", self.shaky.call(7, 1).await),
            1 => format!("{:?}", self.shaky.big(64 * 1024).await),
            2 => format!("{:?}", self.shaky.explode().await),
            _ => panic!("workflow boom"),
        }
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            initial_delay: Duration::from_millis(20),
            multiplier: 2.0,
            max_delay: Duration::from_secs(1),
            jitter: 0.0,
        },
        poll_interval: Duration::from_millis(5),
        // Small enough that `big` returns a result that cannot travel.
        limits: Limits {
            max_payload_bytes: 16 * 1024,
            ..Limits::default()
        },
        ..WorkerConfig::default()
    }
}

fn memory_store() -> SqliteStore {
    SqliteStore::open_with(":memory:", OpenMode::CreateIfMissing, Durability::InMemory).unwrap()
}

async fn run_case(case: u8, id: &str) -> Result<String, ClientError> {
    let store = memory_store();
    let worker = Worker::new(store.clone())
        .service(ShakyDispatcher::new(ShakyImpl::default()))
        .workflow(CasesImpl::default)
        .config(config())
        .start();
    let client = Client::new(store).with_limits(config().limits);
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        client
            .dispatch_with_id(id, CasesStub.run(case))
            .await?
            .result()
            .await
    })
    .await
    .expect("finishes");
    worker.shutdown().await;
    result
}

/// An event as a test sees it: its message, its fields and those of the spans it is in.
#[derive(Clone, Debug)]
struct Captured {
    message: String,
    spans: Vec<String>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
}

/// A layer that keeps every event, with the fields of its spans.
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut all = BTreeMap::new();
        let mut spans = Vec::new();
        for span in ctx
            .event_scope(event)
            .into_iter()
            .flat_map(|s| s.from_root())
        {
            spans.push(span.name().to_string());
            if let Some(fields) = span.extensions().get::<Fields>() {
                all.extend(fields.0.iter().cloned());
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        all.extend(fields.0);
        let message = all.remove("message").unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            message,
            spans,
            fields: all,
        });
    }
}

fn field<'a>(event: &'a Captured, name: &str) -> &'a str {
    event
        .fields
        .get(name)
        .unwrap_or_else(|| panic!("no field `{name}` in {event:#?}"))
}

// The workers' tasks run on this test's thread (a current-thread runtime), so a subscriber set
// as this thread's default sees their events.
#[tokio::test]
async fn retries_dead_letters_parks_and_caught_panics_are_events_with_their_fields() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&events)));
    let _default = tracing::subscriber::set_default(subscriber);

    let retried = run_case(0, "log-retry").await.unwrap();
    assert_eq!(retried, "Ok(7)");
    let dead = run_case(1, "log-dead").await.unwrap();
    assert!(dead.starts_with("Err(Invalid"), "{dead}");
    let parked = run_case(3, "log-park").await;
    assert!(
        matches!(parked, Err(ClientError::Parked { .. })),
        "{parked:?}"
    );

    let events = events.lock().unwrap().clone();
    let find = |message: &str, workflow_id: &str| {
        events
            .iter()
            .find(|e| {
                e.message == message
                    && e.fields
                        .get("task")
                        .or(e.fields.get("id"))
                        .is_some_and(|id| id.starts_with(workflow_id))
            })
            .unwrap_or_else(|| panic!("no `{message}` event for {workflow_id} in {events:#?}"))
            .clone()
    };

    let retry = find("task attempt failed, retrying", "log-retry");
    assert_eq!(retry.spans, ["task"]);
    assert_eq!(field(&retry, "service"), "Shaky");
    assert_eq!(field(&retry, "method"), "call");
    assert_eq!(field(&retry, "attempt"), "1");
    assert_eq!(field(&retry, "delay_ms"), "20");
    assert_eq!(field(&retry, "error"), "\"failure 1\"");
    assert!(
        !events
            .iter()
            .any(|e| e.message == "task attempt failed, retrying"
                && field(e, "task").starts_with("log-retry")
                && field(e, "attempt") == "2"),
        "the second attempt succeeded: {events:#?}"
    );

    let dead = find("task message dead-lettered", "log-dead");
    assert_eq!(field(&dead, "method"), "big");
    assert_eq!(field(&dead, "attempt"), "1");
    let reason = field(&dead, "reason");
    assert!(
        reason.starts_with("result of Shaky::big cannot be encoded"),
        "{reason}"
    );

    let park = find("workflow parked", "log-park");
    assert_eq!(park.spans, ["workflow"]);
    assert_eq!(field(&park, "workflow"), "Cases");
    assert!(field(&park, "reason").contains("workflow boom"), "{park:?}");
    let panic = find("panic caught in user code", "log-park");
    assert_eq!(field(&panic, "panic"), "workflow boom");
    assert!(
        field(&panic, "location").starts_with("tests/logging.rs:"),
        "{panic:?}"
    );
}

/// Run by `caught_panics_are_not_printed_and_other_panics_still_are` in a child process, with
/// no subscriber: whatever reaches stderr was printed by a panic hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by caught_panics_are_not_printed_and_other_panics_still_are"]
async fn panics_child() {
    let service = run_case(2, "child-service").await.unwrap();
    assert!(service.starts_with("Err(Panicked"), "{service}");
    let workflow = run_case(3, "child-workflow").await;
    assert!(
        matches!(workflow, Err(ClientError::Parked { .. })),
        "{workflow:?}"
    );
    // Not infinitic's: the default hook prints it.
    let outside = std::thread::spawn(|| panic!("outside infinitic")).join();
    assert!(outside.is_err());
}

#[test]
fn caught_panics_are_not_printed_and_other_panics_still_are() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "panics_child", "--nocapture"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(!stderr.contains("service boom"), "{stderr}");
    assert!(!stderr.contains("workflow boom"), "{stderr}");
    assert!(stderr.contains("outside infinitic"), "{stderr}");
    assert_eq!(stderr.matches("panicked at").count(), 1, "{stderr}");
}
