//! Distributed benchmark: W1a / W1b / W2 (see `workloads.rs`) on Pulsar + PostgreSQL (fsync
//! on), then the same on the embedded store in the same run, as the baseline, and the ratios.
//!
//! Processes: the service worker runs in a process of its own (this binary again, with
//! `--role service-worker`); the workflow worker and the client run in the bench process. The
//! client is the one applications run over a broker (`Client::with_backends`): it starts
//! workflows with a message and learns each result from its response topic, as the instance
//! reports it (no polling: latencies are not rounded up to a poll interval). For each phase it prints each
//! process's CPU share (utime + stime over wall time, from /proc) and peak RSS (VmHWM): the
//! bench process, the service worker, the broker JVM and PostgreSQL (postmaster and backends).
//!
//! Run (as root: the script runs PostgreSQL as `postgres`):
//!
//! ```text
//! cargo bench --features postgres,pulsar --bench distributed             # full run
//! cargo bench --features postgres,pulsar --bench distributed -- --quick  # short run
//! ```
//!
//! PostgreSQL: `INFINITIC_PG_URL` (+ `INFINITIC_PG_DIR` to measure it) if set, else started
//! with `scripts/postgres.sh start --fsync on`; a server with fsync off is refused. Broker:
//! `INFINITIC_PULSAR_URL` (+ `INFINITIC_PULSAR_RUN` to find its pid) if set, else one of its own.

#[allow(dead_code)]
#[path = "../support/procs.rs"]
mod procs;
#[allow(dead_code)] // each program uses part of it
#[path = "../support/servers.rs"]
mod servers;
mod timing;
mod workloads;

use infinitic::store::postgres::{PostgresOptions, PostgresStore};
use infinitic::store::pulsar::{PulsarOptions, PulsarTransport};
use infinitic::store::sqlite::{Durability, OpenMode};
use infinitic::{Client, SqliteStore, StateStore, Worker, WorkerConfig};
use procs::{Group, Phase, Usage};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use timing::{Stages, TimedState, TimedTransport};
use workloads::{FanOutImpl, Figures, SequenceImpl, StepDispatcher, StepImpl};

const ENV: [&str; 5] = [
    "BENCH_PG_URL",
    "BENCH_PG_SCHEMA",
    "BENCH_PULSAR_URL",
    "BENCH_PULSAR_PREFIX",
    "BENCH_PULSAR_SUBSCRIPTION",
];

fn config() -> WorkerConfig {
    WorkerConfig {
        service_concurrency: 256,
        poll_interval: Duration::from_millis(5),
        ..WorkerConfig::default()
    }
}

/// The service worker process: serves `Step` until its stdin closes.
async fn service_worker() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let [pg, schema, url, prefix, subscription] = ENV.map(var);
    let options = PostgresOptions {
        schema,
        ..PostgresOptions::default()
    };
    let state = PostgresStore::connect(&pg, options)
        .await
        .expect("PostgreSQL");
    let transport = PulsarTransport::connect(
        PulsarOptions::new(url)
            .with_topic_prefix(prefix)
            .with_subscription(subscription),
    )
    .await
    .expect("Pulsar");
    let stages = Stages::default();
    let began = std::time::Instant::now();
    let timed = TimedTransport {
        inner: transport.clone(),
        stages: stages.clone(),
    };
    let worker = Worker::with_backends(timed, state)
        .service(StepDispatcher::new(StepImpl))
        .config(config())
        .start();
    let _ = tokio::task::spawn_blocking(|| {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    })
    .await;
    worker.shutdown().await;
    transport.close().await;
    eprintln!(
        "service worker process, whole run ({:.1} s):\n{}",
        began.elapsed().as_secs_f64(),
        stages.report(began.elapsed())
    );
}

/// The figures of one deployment, and each phase's process usage.
struct Results {
    w1a: Figures,
    w1b: Figures,
    w2: Figures,
    usage: Vec<(&'static str, Duration, Vec<Usage>)>,
    /// Per-stage timings of the bench process during W1b (distributed only).
    w1b_stages: String,
}

/// Runs the three workloads through `client`, measuring `groups` over each.
async fn workloads<S: StateStore + Clone + Send + Sync + 'static>(
    client: &Client<S>,
    groups: &[Group],
    stages: &Stages,
    quick: bool,
) -> Results {
    workloads::warm_up(client).await;
    let runs = if quick { 5 } else { 20 };
    let mut usage = Vec::new();
    // Connected, caught up, nothing to do: what the processes burn waiting.
    let phase = Phase::start(groups);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (wall, u) = phase.finish();
    usage.push(("idle (workers connected)", wall, u));
    let phase = Phase::start(groups);
    let w1a = workloads::w1a(client, runs).await;
    let (wall, u) = phase.finish();
    usage.push(("W1a", wall, u));
    stages.reset();
    let phase = Phase::start(groups);
    let w1b = workloads::w1b(client, if quick { 200 } else { 1_000 }).await;
    let (wall, u) = phase.finish();
    let w1b_stages = stages.report(wall);
    usage.push(("W1b", wall, u));
    let phase = Phase::start(groups);
    let w2 = workloads::w2(client, runs).await;
    let (wall, u) = phase.finish();
    usage.push(("W2", wall, u));
    Results {
        w1a,
        w1b,
        w2,
        usage,
        w1b_stages,
    }
}

async fn distributed(quick: bool) -> Results {
    let pg = servers::Postgres::from_env_or_start();
    let fsync = pg.fsync();
    assert_eq!(
        fsync, "on",
        "PostgreSQL runs with fsync {fsync}: the numbers would lie"
    );
    let own_run = std::env::var_os("INFINITIC_PULSAR_RUN")
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from)
        .join(format!("distributed-{}", std::process::id()));
    let broker = servers::Broker::from_env_or_start(&own_run);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let values = [
        pg.url.clone(),
        format!("bench_{stamp}"),
        broker.url.clone(),
        format!("bench{stamp}"),
        format!("bench{stamp}"),
    ];
    let mut services: Child = Command::new(std::env::current_exe().expect("this program"))
        .args(["--role", "service-worker"])
        .envs(ENV.into_iter().zip(values.iter().map(String::as_str)))
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn the service worker");
    let state = PostgresStore::connect(
        &pg.url,
        PostgresOptions {
            schema: values[1].clone(),
            ..PostgresOptions::default()
        },
    )
    .await
    .expect("PostgreSQL");
    let transport = PulsarTransport::connect(
        PulsarOptions::new(&broker.url)
            .with_topic_prefix(values[3].clone())
            .with_subscription(values[4].clone()),
    )
    .await
    .expect("Pulsar");
    let stages = Stages::default();
    let state = TimedState {
        inner: state,
        stages: stages.clone(),
    };
    let timed = TimedTransport {
        inner: transport.clone(),
        stages: stages.clone(),
    };
    let worker = Worker::with_backends(timed, state.clone())
        .workflow(SequenceImpl::default)
        .workflow(FanOutImpl::default)
        .config(config())
        .start();
    let mut groups = vec![
        Group::process("bench (workflows)", std::process::id()),
        Group::process("service worker", services.id()),
    ];
    groups.extend(broker.pid().map(|pid| Group::tree("broker JVM", pid)));
    groups.extend(pg.pid().map(|pid| Group::tree("PostgreSQL", pid)));
    println!(
        "distributed: PostgreSQL fsync {fsync} at {}, broker {} (pids: bench {}, services {}, broker {:?}, postmaster {:?})",
        pg.url.rsplit('@').next().unwrap_or_default(),
        broker.url,
        std::process::id(),
        services.id(),
        broker.pid(),
        pg.pid()
    );
    // The client over the broker: results are reported to its response topic.
    let client =
        Client::with_backends(transport.clone(), state.clone()).with_clock(state.inner.clock());
    let results = workloads(&client, &groups, &stages, quick).await;
    worker.shutdown().await;
    drop(services.stdin.take());
    let _ = services.wait();
    transport.close().await;
    results
}

async fn embedded(quick: bool) -> Results {
    let dir = std::env::temp_dir().join(format!("infinitic-bench-dist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = SqliteStore::open_with(
        dir.join("full.db"),
        OpenMode::CreateIfMissing,
        Durability::Full,
    )
    .expect("open the store");
    let worker = Worker::new(store.clone())
        .service(StepDispatcher::new(StepImpl))
        .workflow(SequenceImpl::default)
        .workflow(FanOutImpl::default)
        .config(config())
        .start();
    let groups = [Group::process("bench (everything)", std::process::id())];
    let results = workloads(&Client::new(store), &groups, &Stages::default(), quick).await;
    worker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    results
}

fn print(d: &Results, e: &Results, quick: bool) {
    println!(
        "\n{:<34} {:>12} {:>12} {:>10}   target",
        "", "distributed", "embedded", "dist/emb"
    );
    let row = |name: &str, unit: &str, dv: f64, ev: f64, target: Option<(f64, bool)>| {
        let verdict = target.map_or(String::new(), |(t, higher)| {
            let met = if higher { dv >= t } else { dv <= t };
            format!(
                "{} {t} {unit}: {}",
                if higher { ">=" } else { "<=" },
                if met { "met" } else { "MISSED" }
            )
        });
        println!(
            "{name:<34} {dv:>9.1} {unit:<2} {ev:>9.1} {unit:<2} {:>9.2}x   {verdict}",
            dv / ev
        );
    };
    row(
        "W1a latency p50",
        "ms",
        d.w1a.at(0.5),
        e.w1a.at(0.5),
        Some((30.0, false)),
    );
    row(
        "W1a latency p99",
        "ms",
        d.w1a.at(0.99),
        e.w1a.at(0.99),
        None,
    );
    row(
        "W1b steps/s",
        "",
        d.w1b.steps_per_s,
        e.w1b.steps_per_s,
        Some((3000.0, true)),
    );
    row(
        "W1b workflow latency p50",
        "ms",
        d.w1b.at(0.5),
        e.w1b.at(0.5),
        None,
    );
    row(
        "W1b workflow latency p99",
        "ms",
        d.w1b.at(0.99),
        e.w1b.at(0.99),
        None,
    );
    row(
        "W2 fan-out 100 latency p50",
        "ms",
        d.w2.at(0.5),
        e.w2.at(0.5),
        Some((100.0, false)),
    );
    row(
        "W2 fan-out 100 latency p99",
        "ms",
        d.w2.at(0.99),
        e.w2.at(0.99),
        None,
    );
    println!(
        "\ndistributed W1b, bench process (workflow worker, its relay, the client): time per stage\n{}",
        d.w1b_stages
    );
    for (name, r) in [("distributed", d), ("embedded", e)] {
        println!("\n{name}: CPU share and peak RSS per phase");
        for (phase, wall, usage) in &r.usage {
            println!("  {phase} ({:.1} s):", wall.as_secs_f64());
            print!("{}", procs::report(usage));
        }
    }
    println!(
        "\n({}; W1a and W2: {} runs each; W1b: {} workflows of 10 steps, 100 in flight; cores: {}; \
         the workflow worker and the client run in the bench process, services in their own)",
        if quick { "quick run" } else { "full run" },
        if quick { 5 } else { 20 },
        if quick { 200 } else { 1000 },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.iter().any(|a| a == "--role") {
        runtime.block_on(service_worker());
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let d = runtime.block_on(distributed(quick));
    let e = runtime.block_on(embedded(quick));
    print(&d, &e, quick);
}
