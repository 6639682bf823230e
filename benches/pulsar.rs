//! Transport benchmark: messages per second and publish-to-receive latency (p50, p99) through
//! the Pulsar transport, with the in-memory transport measured in the same run as the
//! baseline.
//!
//! - sequential: publish one message, receive it, acknowledge it, then the next;
//! - publish (Pulsar only): publish one message and wait for the broker's confirmation;
//! - pipelined: a publisher sends batches of 100 (up to 8 publishes in flight) while a
//!   consumer receives and acknowledges; latency is from the start of the message's publish
//!   to its receipt.
//!
//! Run: `scripts/pulsar.sh start`, source the env file it prints, then
//! `cargo bench --bench pulsar --features pulsar` (`-- --quick` for a short run).

use infinitic::store::memory::MemoryStore;
use infinitic::store::pulsar::{PulsarOptions, PulsarTransport};
use infinitic::store::{Outgoing, Settlement};
use infinitic::{Timestamp, Transport};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "workflow:Bench";
const LEASE: Duration = Duration::from_secs(60);
const KEYS: usize = 16;
const BATCH: usize = 100;
const IN_FLIGHT: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Numbers {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn numbers(count: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Numbers {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Numbers {
        per_second: count as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn message(n: usize) -> Outgoing {
    let mut payload = vec![0u8; 100];
    payload[..8].copy_from_slice(&(n as u64).to_le_bytes());
    Outgoing::new(
        TOPIC,
        format!("key-{}", n % KEYS),
        payload,
        Timestamp::from_millis(0),
    )
}

fn index(payload: &[u8]) -> usize {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&payload[..8]);
    u64::from_le_bytes(bytes) as usize
}

async fn sequential<T: Transport>(t: &T, count: usize) -> Numbers {
    let topics = vec![TOPIC.to_string()];
    let mut activity = t.activity();
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for n in 0..count {
        let sent = Instant::now();
        t.publish(vec![message(n)]).await.expect("publish");
        loop {
            let received = t.receive(&topics, 1, LEASE).await.expect("receive");
            if let Some(d) = received.deliveries.into_iter().next() {
                latencies.push(sent.elapsed());
                assert_eq!(index(&d.payload), n);
                t.settle(vec![Settlement::Ack {
                    delivery: d.id,
                    publish: Vec::new(),
                }])
                .await
                .expect("settle");
                break;
            }
            activity.wait(Duration::from_millis(50)).await;
        }
    }
    numbers(count, started.elapsed(), latencies)
}

/// Publish and wait for the broker's confirmation, one at a time (nothing received).
async fn publish_only<T: Transport>(t: &T, count: usize) -> Numbers {
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for n in 0..count {
        let sent = Instant::now();
        t.publish(vec![message(n)]).await.expect("publish");
        latencies.push(sent.elapsed());
    }
    numbers(count, started.elapsed(), latencies)
}

async fn pipelined<T: Transport + Clone>(t: &T, count: usize) -> Numbers {
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; count]));
    let started = Instant::now();
    let publisher = {
        let (t, sent_at) = (t.clone(), Arc::clone(&sent_at));
        tokio::spawn(async move {
            let semaphore = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let mut publishes = tokio::task::JoinSet::new();
            for first in (0..count).step_by(BATCH) {
                let permit = Arc::clone(&semaphore).acquire_owned().await.unwrap();
                let batch: Vec<Outgoing> =
                    (first..(first + BATCH).min(count)).map(message).collect();
                {
                    let now = Instant::now();
                    let mut sent_at = sent_at.lock().unwrap();
                    for n in first..(first + BATCH).min(count) {
                        sent_at[n] = Some(now);
                    }
                }
                let t = t.clone();
                publishes.spawn(async move {
                    t.publish(batch).await.expect("publish");
                    drop(permit);
                });
            }
            while publishes.join_next().await.is_some() {}
        })
    };
    let topics = vec![TOPIC.to_string()];
    let mut activity = t.activity();
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let received = t.receive(&topics, 500, LEASE).await.expect("receive");
        if received.deliveries.is_empty() {
            activity.wait(Duration::from_millis(50)).await;
            continue;
        }
        let now = Instant::now();
        {
            let sent_at = sent_at.lock().unwrap();
            for d in &received.deliveries {
                let sent = sent_at[index(&d.payload)].expect("published before received");
                latencies.push(now - sent);
            }
        }
        let acks = received
            .deliveries
            .iter()
            .map(|d| Settlement::Ack {
                delivery: d.id,
                publish: Vec::new(),
            })
            .collect();
        t.settle(acks).await.expect("settle");
    }
    let elapsed = started.elapsed();
    publisher.await.expect("publisher");
    numbers(count, elapsed, latencies)
}

fn show(name: &str, mode: &str, n: Numbers) {
    println!(
        "{name:<8} {mode:<10} {:>10.0} msg/s   p50 {:>9.3} ms   p99 {:>9.3} ms",
        n.per_second,
        n.p50.as_secs_f64() * 1e3,
        n.p99.as_secs_f64() * 1e3
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (seq_count, pipe_count) = if quick { (200, 2_000) } else { (1_000, 20_000) };
    let url = std::env::var("INFINITIC_PULSAR_URL").unwrap_or_else(|_| {
        eprintln!(
            "INFINITIC_PULSAR_URL is not set: run `scripts/pulsar.sh start` and source the env \
             file it prints"
        );
        std::process::exit(2)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "transport benchmark: {seq_count} sequential, {pipe_count} pipelined messages of 100 \
             bytes on {KEYS} keys ({BATCH} per publish, {IN_FLIGHT} publishes in flight)"
        );
        let memory = MemoryStore::new();
        let mem_seq = sequential(&memory, seq_count).await;
        let mem_pipe = pipelined(&MemoryStore::new(), pipe_count).await;
        show("memory", "sequential", mem_seq);
        show("memory", "pipelined", mem_pipe);

        let prefix = format!("bench{}", std::process::id());
        let options = PulsarOptions::new(&url).with_topic_prefix(format!("{prefix}s"));
        let pulsar = PulsarTransport::connect(options).await.expect("connect");
        // Subscribe and warm up (first publish creates the producer and the topic).
        let _ = sequential(&pulsar, 20).await;
        let p_seq = sequential(&pulsar, seq_count).await;
        pulsar.close().await;
        let options = PulsarOptions::new(&url).with_topic_prefix(format!("{prefix}o"));
        let pulsar = PulsarTransport::connect(options).await.expect("connect");
        let p_pub = publish_only(&pulsar, seq_count).await;
        pulsar.close().await;
        let options = PulsarOptions::new(&url).with_topic_prefix(format!("{prefix}p"));
        let pulsar = PulsarTransport::connect(options).await.expect("connect");
        let _ = sequential(&pulsar, 20).await;
        let p_pipe = pipelined(&pulsar, pipe_count).await;
        pulsar.close().await;
        show("pulsar", "publish", p_pub);
        show("pulsar", "sequential", p_seq);
        show("pulsar", "pipelined", p_pipe);
        println!(
            "ratio pulsar/memory: sequential {:.4}x throughput, {:.1}x p50; pipelined {:.4}x \
             throughput, {:.1}x p50",
            p_seq.per_second / mem_seq.per_second,
            p_seq.p50.as_secs_f64() / mem_seq.p50.as_secs_f64(),
            p_pipe.per_second / mem_pipe.per_second,
            p_pipe.p50.as_secs_f64() / mem_pipe.p50.as_secs_f64(),
        );
    });
}
