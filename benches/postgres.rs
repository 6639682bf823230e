//! State store benchmark: transitions per second through `StateStore::commit`, PostgreSQL
//! (fsync on) against the SQLite store (durable, `Durability::Full`) on the same workload in
//! the same run. Each transition is a workflow step as the runtime writes it: one history
//! event appended, one message in the outbox, one consumed message.
//!
//! - one: one instance, sequential steps (each commit awaited before the next): the latency of
//!   one durable step.
//! - many: 1,000 instances stepping at once, 10 steps each (each instance awaits its own
//!   commit): how well commits group into batches.
//!
//! Run: `cargo bench --features postgres --bench postgres` (`-- --quick` for a short run). It
//! starts its own server with `scripts/postgres.sh start --fsync on` (root) and stops it, or
//! uses `INFINITIC_PG_URL` if set; a server with fsync off is refused (the numbers would lie).

use infinitic::message::MessageId;
use infinitic::store::postgres::{PostgresOptions, PostgresStore};
use infinitic::store::sqlite::{Durability, OpenMode};
use infinitic::store::{CommitOutcome, Consumed, DeliveryId, Outgoing, Transition};
use infinitic::store::{StateStore, Transport, WorkflowHeader};
use infinitic::{
    Completion, Generation, HistoryEvent, MethodRun, SqliteStore, StepOutcome, Timestamp,
    WorkflowId, WorkflowState,
};
use std::process::Command;
use std::time::{Duration, Instant};

fn header() -> WorkflowHeader {
    WorkflowHeader {
        generation: Generation::FIRST,
        workflow: "Bench".into(),
        method: "run".into(),
        input: vec![0x91, 0x01],
        started_at: Timestamp::from_millis(1_750_000_000_000),
        parent: None,
    }
}

/// Step `version` of instance `id`, consuming `consumed`: what a worker commits for one
/// completed task.
fn step(id: &WorkflowId, version: u64, consumed: Consumed) -> Transition {
    let position = u32::try_from(version).unwrap_or(u32::MAX);
    Transition {
        workflow_id: id.clone(),
        expected_version: version,
        header: (version == 0).then(header),
        state: WorkflowState::Running,
        append: vec![HistoryEvent::Completed(Completion {
            run: MethodRun(0),
            position,
            at: Timestamp::from_millis(1_750_000_000_000 + version),
            outcome: StepOutcome::Completed(vec![0xcd, 0x01, 0x00]),
        })],
        outbox: vec![Outgoing::new(
            "service:Bench",
            id.as_str(),
            vec![0u8; 120],
            Timestamp::from_millis(0),
        )],
        consumed: Some(consumed),
        dead_letter: None,
        report_to: None,
    }
}

/// How each store recognises a consumed message.
trait Consuming: StateStore + Clone {
    /// `count` messages delivered for `id`'s steps, made before the clock starts.
    async fn delivered(&self, id: &WorkflowId, count: u64) -> Vec<Consumed>;
}

/// A state store alone records the message's id.
impl Consuming for PostgresStore {
    async fn delivered(&self, id: &WorkflowId, count: u64) -> Vec<Consumed> {
        let consumed = |n: u64| Consumed {
            message: MessageId::new(format!("done:{id}/0/{n}")),
            delivery: DeliveryId::new(n),
        };
        (0..count).map(consumed).collect()
    }
}

/// The embedded store deletes the message's queue row: queued and leased beforehand.
impl Consuming for SqliteStore {
    async fn delivered(&self, id: &WorkflowId, count: u64) -> Vec<Consumed> {
        let topic = format!("workflow:Bench:{id}");
        let messages = (0..count)
            .map(|_| {
                Outgoing::new(
                    &topic,
                    id.as_str(),
                    vec![0u8; 64],
                    Timestamp::from_millis(0),
                )
            })
            .collect();
        self.publish(messages).await.expect("publish");
        let leased = self
            .receive(
                &[topic],
                usize::try_from(count).unwrap_or(usize::MAX),
                Duration::from_secs(3600),
            )
            .await
            .expect("receive");
        assert_eq!(leased.deliveries.len() as u64, count);
        leased
            .deliveries
            .iter()
            .map(|d| Consumed {
                message: MessageId::new(format!("done:{id}/{}", d.id)),
                delivery: d.id,
            })
            .collect()
    }
}

struct Run {
    transitions: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.transitions as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }
}

async fn commit_one<S: StateStore>(store: &S, transition: Transition) -> Duration {
    let start = Instant::now();
    let outcome = store.commit(vec![transition]).await.expect("commit");
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    start.elapsed()
}

/// One instance, `steps` sequential steps.
async fn one<S: Consuming>(store: &S, prefix: &str, steps: u64) -> Run {
    let id = WorkflowId::new(format!("{prefix}-one"));
    let delivered = store.delivered(&id, steps).await;
    let start = Instant::now();
    let mut latencies = Vec::new();
    for (version, consumed) in (0..steps).zip(delivered) {
        latencies.push(commit_one(store, step(&id, version, consumed)).await);
    }
    Run {
        transitions: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    }
}

/// `instances` instances at once, `steps` steps each.
async fn many<S: Consuming>(store: &S, prefix: &str, instances: usize, steps: u64) -> Run {
    let mut prepared = Vec::new();
    for n in 0..instances {
        let id = WorkflowId::new(format!("{prefix}-many-{n}"));
        let delivered = store.delivered(&id, steps).await;
        prepared.push((id, delivered));
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (id, delivered) in prepared {
        let store = store.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for (version, consumed) in (0..steps).zip(delivered) {
                latencies.push(commit_one(&store, step(&id, version, consumed)).await);
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("a task"));
    }
    Run {
        transitions: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    }
}

fn show(store: &str, workload: &str, run: &mut Run) -> f64 {
    let (p50, p99) = (run.percentile(0.5), run.percentile(0.99));
    println!(
        "{store:<10} {workload:<24} {:>7} transitions in {:>7.2?}: {:>8.0}/s  p50 {:>9.2?}  p99 {:>9.2?}",
        run.transitions,
        run.elapsed,
        run.per_second(),
        p50,
        p99
    );
    run.per_second()
}

/// A server of our own with fsync on, stopped on drop; or the one in `INFINITIC_PG_URL`.
struct Server {
    url: String,
    dir: Option<String>,
}

impl Server {
    fn get() -> Self {
        if let Ok(url) = std::env::var("INFINITIC_PG_URL") {
            return Self { url, dir: None };
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh");
        let output = Command::new(script)
            .args(["start", "--fsync", "on"])
            .output()
            .expect("scripts/postgres.sh runs");
        assert!(
            output.status.success(),
            "scripts/postgres.sh start --fsync on: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let env_file = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let env = std::fs::read_to_string(&env_file).expect("the env file");
        let value = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(str::to_string)
                .expect(name)
        };
        Self {
            url: value("INFINITIC_PG_URL"),
            dir: Some(value("INFINITIC_PG_DIR")),
        }
    }

    fn fsync(&self) -> String {
        let output = Command::new("psql")
            .args([&self.url, "-X", "-A", "-t", "-c", "SHOW fsync"])
            .output()
            .expect("psql runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh");
            let _ = Command::new(script).args(["stop", dir]).status();
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (one_steps, instances, many_steps) = match quick {
        true => (200, 200, 5),
        false => (2_000, 1_000, 10),
    };
    let server = Server::get();
    let fsync = server.fsync();
    if fsync != "on" {
        eprintln!(
            "the server has fsync={fsync:?}: start one with `scripts/postgres.sh start --fsync on`"
        );
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("infinitic-bench-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let sqlite = SqliteStore::open_with(
            dir.join("bench.db"),
            OpenMode::CreateIfMissing,
            Durability::Full,
        )
        .expect("the SQLite store");
        let schema = format!("bench_{}", std::process::id());
        let options = PostgresOptions {
            schema: schema.clone(),
            ..PostgresOptions::default()
        };
        let postgres = PostgresStore::connect(&server.url, options)
            .await
            .expect("the PostgreSQL store");
        println!("PostgreSQL fsync={fsync}, SQLite Durability::Full; {one_steps} sequential steps, {instances} instances x {many_steps} steps");
        let mut run = one(&postgres, "pg", one_steps).await;
        let pg_one = show("postgres", "one instance", &mut run);
        let mut run = one(&sqlite, "sq", one_steps).await;
        let sq_one = show("sqlite", "one instance", &mut run);
        let label = format!("{instances} instances");
        let mut run = many(&postgres, "pg", instances, many_steps).await;
        let pg_many = show("postgres", &label, &mut run);
        let mut run = many(&sqlite, "sq", instances, many_steps).await;
        let sq_many = show("sqlite", &label, &mut run);
        println!(
            "postgres / sqlite: one instance {:.2}x, {instances} instances {:.2}x",
            pg_one / sq_one,
            pg_many / sq_many
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = Command::new("psql")
            .args([&server.url, "-X", "-q", "-c", &format!("DROP SCHEMA {schema} CASCADE")])
            .status();
    });
}
