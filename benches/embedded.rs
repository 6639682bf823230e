//! Embedded runtime benchmark: every step durable (SQLite WAL, synchronous=FULL, fsync before
//! acknowledgement), then the same runs on a non-durable in-memory store, so the cost of
//! durability shows as a ratio.
//!
//! - W1a: one workflow of 10 sequential steps (n -> n+1); median of 20 runs.
//! - W1b: 1,000 such workflows, 100 in flight.
//! - W2: one workflow fanning out 100 parallel steps and summing them; median of 20 runs.
//!
//! Run: `cargo bench --bench embedded` (`-- --quick` for a short run).

use infinitic::prelude::*;
use infinitic::store::sqlite::OpenMode;
use infinitic::store::Durability;
use infinitic::{Client, SqliteStore, Worker, WorkerConfig};
use std::time::{Duration, Instant};

#[service]
pub trait Step {
    async fn inc(&self, n: u64) -> u64;
}

struct StepImpl;
impl Step for StepImpl {
    async fn inc(&self, n: u64) -> u64 {
        n + 1
    }
}

#[workflow]
pub trait Sequence {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct SequenceImpl {
    step: StepStub,
}

#[workflow]
impl Sequence for SequenceImpl {
    async fn run(&self, mut n: u64) -> u64 {
        for _ in 0..10 {
            n = self.step.inc(n).await.unwrap_or(0);
        }
        n
    }
}

#[workflow]
pub trait FanOut {
    async fn run(&self, width: u64) -> u64;
}

#[derive(Default)]
pub struct FanOutImpl {
    step: StepStub,
}

#[workflow]
impl FanOut for FanOutImpl {
    async fn run(&self, width: u64) -> u64 {
        let calls = (0..width).map(|i| self.step.inc(i));
        workflow::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.unwrap_or(0))
            .sum()
    }
}

struct Results {
    w1a_ms: f64,
    w1b_wf_per_s: f64,
    w1b_steps_per_s: f64,
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
    let in_flight = 100;
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(total);
    let before = store.stats();
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
    let elapsed = start.elapsed().as_secs_f64();
    let after = store.stats();
    let stats = infinitic::store::sqlite::StoreStats {
        transactions: after.transactions - before.transactions,
        operations: after.operations - before.operations,
        transitions: after.transitions - before.transitions,
    };
    latencies.sort_by(|a, b| a.total_cmp(b));

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
        w1b_wf_per_s: total as f64 / elapsed,
        w1b_steps_per_s: (total * 10) as f64 / elapsed,
        w1b_p50_ms: percentile(&latencies, 0.5),
        w1b_p99_ms: percentile(&latencies, 0.99),
        w2_ms: median(w2),
        stats,
    }
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

    let durable_store = SqliteStore::open(dir.join("bench.db"), OpenMode::CreateIfMissing)
        .expect("open the durable store");
    let durable = runtime.block_on(run(durable_store, quick));
    let rss_after_durable = peak_rss_mib();
    let memory_store =
        SqliteStore::open_with(":memory:", OpenMode::CreateIfMissing, Durability::InMemory)
            .expect("open the in-memory store");
    let memory = runtime.block_on(run(memory_store, quick));
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "embedded runtime, {} (cores: {})",
        if quick { "quick run" } else { "full run" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>14} {:>14} {:>10}",
        "", "durable", "in-memory", "mem/dur"
    );
    let row = |name: &str, d: f64, m: f64, unit: &str| {
        println!(
            "{name:<34} {:>11.2} {unit:<2} {:>11.2} {unit:<2} {:>9.2}x",
            d,
            m,
            m / d
        );
    };
    let row_lower = |name: &str, d: f64, m: f64, unit: &str| {
        println!(
            "{name:<34} {:>11.2} {unit:<2} {:>11.2} {unit:<2} {:>9.2}x",
            d,
            m,
            d / m
        );
    };
    row_lower(
        "W1a 10 sequential steps (median)",
        durable.w1a_ms,
        memory.w1a_ms,
        "ms",
    );
    row(
        "W1b workflows/s (1,000, 100 in flight)",
        durable.w1b_wf_per_s,
        memory.w1b_wf_per_s,
        "",
    );
    row(
        "W1b steps/s",
        durable.w1b_steps_per_s,
        memory.w1b_steps_per_s,
        "",
    );
    row_lower(
        "W1b workflow latency p50",
        durable.w1b_p50_ms,
        memory.w1b_p50_ms,
        "ms",
    );
    row_lower(
        "W1b workflow latency p99",
        durable.w1b_p99_ms,
        memory.w1b_p99_ms,
        "ms",
    );
    row_lower(
        "W2 fan-out of 100 + sum (median)",
        durable.w2_ms,
        memory.w2_ms,
        "ms",
    );
    for (name, r) in [("durable", &durable), ("in-memory", &memory)] {
        println!(
            "W1b group commit, {name}: {} transactions for {} operations ({} transitions): {:.1} transitions per transaction",
            r.stats.transactions,
            r.stats.operations,
            r.stats.transitions,
            r.stats.transitions as f64 / r.stats.transactions.max(1) as f64
        );
    }
    println!(
        "peak RSS: {rss_after_durable:.1} MiB after the durable runs, {:.1} MiB at the end",
        peak_rss_mib()
    );
    println!("(ratio column: how many times faster the non-durable store is)");
}
