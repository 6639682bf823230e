//! Embedded runtime benchmark: every step durable (fsync before acknowledgement), with the
//! default `Durability::Full` (fsync beside the next transaction) and with
//! `Durability::FullBeforeVisible` (fsync inside each commit), then the same runs on a
//! non-durable in-memory store, so the cost of durability shows as a ratio.
//!
//! - W1a: one workflow of 10 sequential steps (n -> n+1); median of 20 runs.
//! - W1b: 1,000 such workflows, 100 in flight; median of 5 runs (the machine is noisy).
//! - W2: one workflow fanning out 100 parallel steps and summing them; median of 20 runs.
//!
//! Run: `cargo bench --bench embedded` (`-- --quick` for a short run).

use infinitic::store::sqlite::Durability;
use infinitic::store::sqlite::OpenMode;
use infinitic::{Client, SqliteStore, Worker, WorkerConfig};
use std::time::{Duration, Instant};

#[path = "support/workloads.rs"]
mod workloads;

use workloads::{FanOutImpl, FanOutStub, SequenceImpl, SequenceStub, StepDispatcher, StepImpl};

struct Results {
    w1a_ms: f64,
    /// Median of the W1b runs, and the slowest and fastest run.
    w1b_wf_per_s: f64,
    w1b_steps_per_s: f64,
    w1b_steps_range: (f64, f64),
    w1b_p50_ms: f64,
    w1b_p99_ms: f64,
    w2_ms: f64,
    stats: infinitic::store::sqlite::StoreStats,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    percentile(&xs, 0.5)
}

async fn run(store: SqliteStore, quick: bool) -> Results {
    let worker = Worker::new(store.clone())
        .service(StepDispatcher::new(StepImpl))
        .workflow(SequenceImpl::default)
        .workflow(FanOutImpl::default)
        .config(WorkerConfig {
            service_concurrency: 256,
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    let client = Client::new(store.clone());
    let runs = if quick { 5 } else { 20 };

    // Warm-up.
    for i in 0..3 {
        client.run(SequenceStub.run(i)).await.unwrap();
    }

    let mut w1a = Vec::new();
    for i in 0..runs {
        let start = Instant::now();
        let out = client.run(SequenceStub.run(i)).await.unwrap();
        w1a.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(out, i + 10);
    }

    let total = if quick { 200 } else { 1_000 };
    let w1b_runs = if quick { 1 } else { 5 };
    let before = store.stats();
    let mut latencies = Vec::with_capacity(total * w1b_runs);
    let mut throughputs = Vec::with_capacity(w1b_runs);
    for _ in 0..w1b_runs {
        let elapsed = w1b(&client, total, &mut latencies).await;
        throughputs.push(total as f64 / elapsed);
    }
    let after = store.stats();
    let stats = after.since(&before);
    latencies.sort_by(|a, b| a.total_cmp(b));
    throughputs.sort_by(|a, b| a.total_cmp(b));
    let w1b_wf_per_s = median(throughputs.clone());

    let mut w2 = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let out = client.run(FanOutStub.run(100)).await.unwrap();
        w2.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(out, (1..=100).sum::<u64>());
    }
    worker.shutdown().await;
    Results {
        w1a_ms: median(w1a),
        w1b_wf_per_s,
        w1b_steps_per_s: w1b_wf_per_s * 10.0,
        w1b_steps_range: (
            throughputs[0] * 10.0,
            throughputs[throughputs.len() - 1] * 10.0,
        ),
        w1b_p50_ms: percentile(&latencies, 0.5),
        w1b_p99_ms: percentile(&latencies, 0.99),
        w2_ms: median(w2),
        stats,
    }
}

/// One W1b run: `total` workflows of 10 steps, 100 in flight. Returns the elapsed seconds and
/// adds each workflow's latency (ms) to `latencies`.
async fn w1b(client: &Client<SqliteStore>, total: usize, latencies: &mut Vec<f64>) -> f64 {
    let in_flight = 100;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0u64;
    while next < total as u64 || !tasks.is_empty() {
        while tasks.len() < in_flight && next < total as u64 {
            let client = client.clone();
            let n = next;
            tasks.spawn(async move {
                let t = Instant::now();
                let out = client.run(SequenceStub.run(n)).await.unwrap();
                assert_eq!(out, n + 10);
                t.elapsed().as_secs_f64() * 1e3
            });
            next += 1;
        }
        if let Some(done) = tasks.join_next().await {
            latencies.push(done.unwrap());
        }
    }
    start.elapsed().as_secs_f64()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = std::env::temp_dir().join(format!("infinitic-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");

    let open = |file: &str, durability: Durability| {
        SqliteStore::open_with(dir.join(file), OpenMode::CreateIfMissing, durability)
            .expect("open the store")
    };
    let durable = runtime.block_on(run(open("full.db", Durability::Full), quick));
    let rss_after_durable = peak_rss_mib();
    let strict = runtime.block_on(run(
        open("before-visible.db", Durability::FullBeforeVisible),
        quick,
    ));
    let memory = runtime.block_on(run(open(":memory:", Durability::InMemory), quick));
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "embedded runtime, {} (cores: {})",
        if quick { "quick run" } else { "full run" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  durable:        Durability::Full (the default): fsync before every answer");
    println!("  before-visible: Durability::FullBeforeVisible: fsync inside every commit");
    println!("  in-memory:      Durability::InMemory: nothing on disk (baseline)");
    println!(
        "{:<40} {:>12} {:>15} {:>12} {:>8}",
        "", "durable", "before-visible", "in-memory", "mem/dur"
    );
    let results = [&durable, &strict, &memory];
    // `higher`: a bigger number is better (throughput); the ratio says how many times better
    // in-memory is than durable either way.
    let row = |name: &str, unit: &str, higher: bool, value: &dyn Fn(&Results) -> f64| {
        let [d, s, m] = results.map(value);
        let ratio = if higher { m / d } else { d / m };
        println!(
            "{name:<40} {d:>9.2} {unit:<2} {s:>12.2} {unit:<2} {m:>9.2} {unit:<2} {ratio:>7.2}x"
        );
    };
    row("W1a 10 sequential steps (median)", "ms", false, &|r| {
        r.w1a_ms
    });
    row("W1b workflows/s (median of runs)", "", true, &|r| {
        r.w1b_wf_per_s
    });
    row("W1b steps/s (median of runs)", "", true, &|r| {
        r.w1b_steps_per_s
    });
    row("W1b steps/s, slowest run", "", true, &|r| {
        r.w1b_steps_range.0
    });
    row("W1b steps/s, fastest run", "", true, &|r| {
        r.w1b_steps_range.1
    });
    row("W1b workflow latency p50", "ms", false, &|r| r.w1b_p50_ms);
    row("W1b workflow latency p99", "ms", false, &|r| r.w1b_p99_ms);
    row("W2 fan-out of 100 + sum (median)", "ms", false, &|r| {
        r.w2_ms
    });
    for (name, r) in [
        ("durable", &durable),
        ("before-visible", &strict),
        ("in-memory", &memory),
    ] {
        println!(
            "W1b group commit, {name}: {} transactions for {} operations ({} transitions): {:.1} transitions per transaction, {} log fsyncs by the sync thread",
            r.stats.transactions,
            r.stats.operations,
            r.stats.transitions,
            r.stats.transitions as f64 / r.stats.transactions.max(1) as f64,
            r.stats.log_syncs,
        );
    }
    println!(
        "peak RSS: {rss_after_durable:.1} MiB after the durable runs, {:.1} MiB at the end",
        peak_rss_mib()
    );
    println!("(W1b: {} runs of 1,000 workflows of 10 steps, 100 in flight; ratio column: how many times faster the non-durable store is)", if quick { 1 } else { 5 });
}
