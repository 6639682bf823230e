//! Benchmarks of the pure core: sticky execution, cold replay and memory per cached workflow,
//! with an engine-free baseline measured in the same run so results can be quoted as ratios.
//!
//! ```text
//! cargo bench --bench core                 # full run (well under a minute in release)
//! cargo bench --bench core -- --quick      # smaller counts, for a smoke test
//! INFINITIC_BENCH_QUICK=1 cargo bench --bench core
//! ```
//!
//! In-process, no I/O: the bench completes every command itself with the outcome a real
//! `Counter::next` service would return (`n + 1`), so only the engine is measured.

use infinitic::prelude::*;
use infinitic_core::{
    decode, encode, replay, Applied, Completion, History, HistoryEvent, MethodRun, Payload,
    Progress, Start, Status, StepOutcome, Timestamp, WorkflowId, WorkflowInstance,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The workflow under test: `steps` sequential service calls, n -> n + 1.

#[service]
pub trait Counter {
    async fn next(&self, n: u64) -> u64;
}

#[workflow]
pub trait Chain {
    async fn run(&self, steps: u32) -> u64;
}

#[derive(Default)]
pub struct ChainImpl {
    counter: CounterStub,
}

#[workflow]
impl Chain for ChainImpl {
    async fn run(&self, steps: u32) -> u64 {
        let mut n = 0;
        for _ in 0..steps {
            n = match self.counter.next(n).await {
                Ok(next) => next,
                Err(_) => return u64::MAX,
            };
        }
        n
    }
}

/// The real service, used once through `WorkflowTester` to cross-check the bench's driver.
struct PlusOne;

impl Counter for PlusOne {
    async fn next(&self, n: u64) -> u64 {
        n + 1
    }
}

// ---------------------------------------------------------------------------------------------
// A counting global allocator (counts only while `COUNTING` is set, so the timed phases pay a
// single relaxed load per allocation).

struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as isize, Relaxed);
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() && COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as isize, Relaxed);
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() && COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Live heap bytes and allocation count since `begin`.
struct HeapWindow {
    bytes: isize,
    allocations: usize,
}

impl HeapWindow {
    fn begin() -> Self {
        COUNTING.store(true, Relaxed);
        Self {
            bytes: LIVE_BYTES.load(Relaxed),
            allocations: ALLOCATIONS.load(Relaxed),
        }
    }

    /// (live bytes delta, allocations) so far.
    fn read(&self) -> (isize, usize) {
        (
            LIVE_BYTES.load(Relaxed) - self.bytes,
            ALLOCATIONS.load(Relaxed) - self.allocations,
        )
    }

    fn end(self) -> (isize, usize) {
        let read = self.read();
        COUNTING.store(false, Relaxed);
        read
    }
}

/// Resident set size in bytes (second field of /proc/self/statm, 4 KiB pages).
fn rss_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

// ---------------------------------------------------------------------------------------------
// Driving the engine the way a worker does.

/// Workflow clock used for every event (the tester's default start, so histories compare).
const T0: Timestamp = Timestamp::from_millis(1_767_225_600_000);

struct Bench {
    definition: infinitic::WorkflowFactory<fn() -> ChainImpl>,
}

impl Bench {
    fn new() -> Self {
        Self {
            definition: infinitic::WorkflowFactory::new(ChainImpl::default as fn() -> ChainImpl),
        }
    }

    fn input(steps: u32) -> Payload {
        ChainStub
            .run(steps)
            .encode_args(&infinitic::Limits::default())
            .expect("arguments encode")
    }

    fn start(&self, id: WorkflowId, input: &[u8]) -> (WorkflowInstance, Progress) {
        WorkflowInstance::start(
            &self.definition,
            Start {
                generation: infinitic::Generation::FIRST,
                workflow_id: id,
                run: MethodRun(0),
                method: "run",
                input,
                at: T0,
            },
        )
        .expect("the workflow starts")
    }
}

/// The completion a worker would feed back for the single command of `progress`, the call
/// `next(n)` answered with `n + 1`.
fn complete_next(progress: &Progress, n: u64) -> Completion {
    assert!(
        progress.commands.len() == 1 && progress.status == Status::Running,
        "expected exactly one new command while running, got {progress:?}"
    );
    Completion {
        run: MethodRun(0),
        position: progress.commands[0].position,
        at: T0,
        outcome: StepOutcome::Completed(encode(&(n + 1)).expect("u64 encodes")),
    }
}

fn progressed(applied: Applied) -> Progress {
    match applied {
        Applied::Progressed(progress) => progress,
        Applied::Ignored(reason) => panic!("completion ignored: {reason:?}"),
    }
}

fn output_of(status: &Status) -> u64 {
    match status {
        Status::Completed(bytes) => decode(bytes).expect("output decodes"),
        other => panic!("workflow did not complete: {other:?}"),
    }
}

/// Runs one workflow of `steps` steps to completion, sticky; returns its output.
fn run_sticky(bench: &Bench, id: WorkflowId, input: &[u8], steps: u32) -> u64 {
    let (mut instance, mut progress) = bench.start(id, input);
    for n in 0..u64::from(steps) {
        let completion = complete_next(&progress, n);
        progress = progressed(instance.apply(completion).expect("accepted"));
    }
    output_of(&progress.status)
}

/// Same, timing every `apply` (nanoseconds pushed to `samples`) and the start.
fn run_sticky_sampled(
    bench: &Bench,
    id: WorkflowId,
    input: &[u8],
    steps: u32,
    starts: &mut Vec<u64>,
    samples: &mut Vec<u64>,
) -> u64 {
    let t = Instant::now();
    let (mut instance, mut progress) = bench.start(id, input);
    starts.push(t.elapsed().as_nanos() as u64);
    for n in 0..u64::from(steps) {
        let completion = complete_next(&progress, n);
        let t = Instant::now();
        let applied = instance.apply(completion);
        samples.push(t.elapsed().as_nanos() as u64);
        progress = progressed(applied.expect("accepted"));
    }
    output_of(&progress.status)
}

/// Runs a workflow live, recording its history exactly like `WorkflowTester` does.
fn run_recording(bench: &Bench, id: WorkflowId, steps: u32) -> (History, Status) {
    let input = Bench::input(steps);
    let mut history = History::new(id.clone(), ChainStub::NAME, "run", input.clone(), T0);
    let (mut instance, mut progress) = bench.start(id, &input);
    history.record_scheduled(&progress.commands);
    for n in 0..u64::from(steps) {
        let completion = complete_next(&progress, n);
        progress = progressed(instance.apply(completion.clone()).expect("accepted"));
        history.events.push(HistoryEvent::Completed(completion));
        history.record_scheduled(&progress.commands);
    }
    (history, progress.status)
}

// ---------------------------------------------------------------------------------------------
// Baseline: the same work without the engine.

/// One step's codec work: the stub encodes the arguments, the service encodes its result, the
/// workflow decodes it.
fn codec_step(n: u64) -> u64 {
    let args = encode(&(n,)).expect("encodes");
    black_box(&args);
    let result = encode(&(n + 1)).expect("encodes");
    decode(black_box(&result)).expect("decodes")
}

/// A plain async fn doing the same codec work around `steps` awaits of ready futures.
async fn plain_ready(steps: u32) -> u64 {
    let mut n = 0;
    for _ in 0..steps {
        let args = encode(&(n,)).expect("encodes");
        black_box(&args);
        let result = std::future::ready(encode(&(n + 1)).expect("encodes")).await;
        n = decode(black_box(&result)).expect("decodes");
    }
    n
}

/// A future that is pending once, then ready: a real suspension point, like a durable step.
struct YieldOnce<T>(Option<T>, bool);

impl<T: Unpin> Future for YieldOnce<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<T> {
        if std::mem::replace(&mut self.1, true) {
            Poll::Ready(self.0.take().expect("polled after ready"))
        } else {
            Poll::Pending
        }
    }
}

/// The same, but each await suspends once, so the future is polled once per step like the
/// engine polls the workflow once per completion.
async fn plain_suspending(steps: u32) -> u64 {
    let mut n = 0;
    for _ in 0..steps {
        let args = encode(&(n,)).expect("encodes");
        black_box(&args);
        let result = YieldOnce(Some(encode(&(n + 1)).expect("encodes")), false).await;
        n = decode(black_box(&result)).expect("decodes");
    }
    n
}

type BoxedFuture = Pin<Box<dyn Future<Output = u64> + Send>>;

/// Polls a boxed future (boxed like `WorkflowFuture`) to completion with a no-op waker.
fn drive(mut future: BoxedFuture) -> u64 {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the tester")
        .block_on(future)
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting.

/// `println!` into a section's buffer.
macro_rules! say {
    ($buffer:expr, $($arg:tt)*) => {{
        $buffer.push_str(&format!($($arg)*));
        $buffer.push('\n');
    }};
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Nearest-rank percentile of sorted values.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs every job once per round, in turn; returns each round's times in seconds.
fn interleaved(rounds: usize, jobs: &mut [&mut dyn FnMut()]) -> Vec<Vec<f64>> {
    (0..rounds)
        .map(|_| {
            jobs.iter_mut()
                .map(|job| {
                    let t = Instant::now();
                    job();
                    t.elapsed().as_secs_f64()
                })
                .collect()
        })
        .collect()
}

/// The median over rounds of one job's time.
fn median_of(times: &[Vec<f64>], job: usize) -> Duration {
    let mut job_times: Vec<f64> = times.iter().map(|round| round[job]).collect();
    Duration::from_secs_f64(median(&mut job_times))
}

fn si(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} k", value / 1e3)
    } else {
        format!("{value:.0} ")
    }
}

fn ns(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} ms", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.2} us", value / 1e3)
    } else {
        format!("{value:.0} ns")
    }
}

fn thousands(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------

struct Config {
    quick: bool,
    workflows: usize,
    rounds: usize,
    replay_steps: u32,
    replay_runs: usize,
    cached: usize,
}

impl Config {
    fn from_env() -> Self {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var_os("INFINITIC_BENCH_QUICK").is_some_and(|v| v != "0");
        if quick {
            Self {
                quick,
                workflows: 2_000,
                rounds: 3,
                replay_steps: 1_000,
                replay_runs: 10,
                cached: 2_000,
            }
        } else {
            Self {
                quick,
                workflows: 20_000,
                rounds: 21,
                replay_steps: 1_000,
                replay_runs: 200,
                cached: 10_000,
            }
        }
    }
}

const STEPS: u32 = 10;

fn main() {
    let config = Config::from_env();
    let bench = Bench::new();
    let input = Bench::input(STEPS);
    let wall = Instant::now();

    println!(
        "infinitic-core bench ({} run, {} profile, in-process, no I/O)",
        if config.quick { "quick" } else { "full" },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "workflow Chain::run(steps): for each step `n = Counter::next(n).await` (n -> n+1); \
         the bench completes each command with StepOutcome::Completed(encode(&(n+1)))"
    );

    // Cross-check the driver against the real tester (real service, same recording rules).
    let (recorded, live_status) = run_recording(&bench, WorkflowId::new("test"), STEPS);
    let tested = block_on(
        WorkflowTester::new()
            .service(CounterDispatcher::new(PlusOne))
            .run(ChainImpl::default, ChainStub.run(STEPS)),
    )
    .expect("the tester runs the workflow");
    assert_eq!(
        tested.output,
        u64::from(STEPS),
        "the workflow computes n+1 chains"
    );
    assert_eq!(output_of(&live_status), u64::from(STEPS));
    assert!(
        recorded == tested.history,
        "the bench's recorded history differs from WorkflowTester's"
    );

    // Sections are measured in the order that keeps them clean (memory first, on a fresh heap)
    // and printed in numbered order.
    let (mut s1, mut s2, mut s3, mut s4) =
        (String::new(), String::new(), String::new(), String::new());

    // ---- 3. Memory, measured first so the heap and RSS are not full of freed blocks. --------
    say!(
        s3,
        "[3] memory per cached idle workflow ({} live {STEPS}-step instances)",
        thousands(config.cached)
    );
    let ids: Vec<WorkflowId> = (0..config.cached)
        .map(|i| WorkflowId::new(format!("wf-{i}")))
        .collect();
    let rss_before = rss_bytes();
    let window = HeapWindow::begin();
    let mut cache: Vec<WorkflowInstance> = Vec::with_capacity(config.cached);
    for id in &ids {
        let (instance, progress) = bench.start(id.clone(), &input);
        assert!(progress.status == Status::Running && progress.commands.len() == 1);
        cache.push(instance);
    }
    let (heap_1, allocs_1) = window.read();
    let rss_1 = rss_bytes();
    for instance in &mut cache {
        let mut pending: Vec<u32> = instance.pending().collect();
        for n in 0..4 {
            assert_eq!(pending.len(), 1);
            let applied = instance.apply(Completion {
                run: MethodRun(0),
                position: pending[0],
                at: T0,
                outcome: StepOutcome::Completed(encode(&(n + 1u64)).expect("encodes")),
            });
            let progress = progressed(applied.expect("accepted"));
            assert!(progress.status == Status::Running);
            pending = instance.pending().collect();
        }
        assert_eq!(pending, [4], "parked waiting on the 5th step");
    }
    let (heap_5, _) = window.end();
    let rss_5 = rss_bytes();
    let per = |bytes: f64| bytes / config.cached as f64;
    let rss_per = |after: Option<i64>| match (rss_before, after) {
        (Some(before), Some(after)) => format!("{:>6.0} B", per((after - before) as f64)),
        _ => "   n/a".to_string(),
    };
    say!(
        s3,
        "    parked on step 1   heap {:>6.0} B/instance   RSS {}/instance   ({:.1} allocs/start)",
        per(heap_1 as f64),
        rss_per(rss_1),
        allocs_1 as f64 / config.cached as f64
    );
    say!(
        s3,
        "    parked on step 5   heap {:>6.0} B/instance   RSS {}/instance",
        per(heap_5 as f64),
        rss_per(rss_5)
    );
    say!(
        s3,
        "    (heap counts the cache slot: size_of::<WorkflowInstance>() = {} B; RSS delta is \
         /proc/self/statm pages * 4096)",
        std::mem::size_of::<WorkflowInstance>()
    );
    drop(cache);
    drop(ids);

    // ---- 1. Sticky execution. ------------------------------------------------------------------
    say!(
        s1,
        "[1] sticky execution: {} workflows x {STEPS} steps, median of {} rounds",
        thousands(config.workflows),
        config.rounds
    );
    let workflows = config.workflows;
    let total_steps = (workflows * STEPS as usize) as f64;
    // Warm up.
    for i in 0..workflows / 10 {
        black_box(run_sticky(
            &bench,
            WorkflowId::new(format!("warm-{i}")),
            &input,
            STEPS,
        ));
    }
    // Engine and baselines run interleaved, round by round, so machine noise hits them alike.
    let mut sticky_job = || {
        for i in 0..workflows {
            let out = run_sticky(&bench, WorkflowId::new(format!("wf-{i}")), &input, STEPS);
            assert_eq!(black_box(out), u64::from(STEPS));
        }
    };
    let mut codec_job = || {
        for _ in 0..workflows {
            let mut n = 0;
            for _ in 0..STEPS {
                n = codec_step(black_box(n));
            }
            assert_eq!(n, u64::from(STEPS));
        }
    };
    let mut ready_job = || {
        for _ in 0..workflows {
            let out = drive(Box::pin(plain_ready(black_box(STEPS))));
            assert_eq!(black_box(out), u64::from(STEPS));
        }
    };
    let mut suspending_job = || {
        for _ in 0..workflows {
            let out = drive(Box::pin(plain_suspending(black_box(STEPS))));
            assert_eq!(black_box(out), u64::from(STEPS));
        }
    };
    let times = interleaved(
        config.rounds,
        &mut [
            &mut sticky_job,
            &mut codec_job,
            &mut ready_job,
            &mut suspending_job,
        ],
    );
    let [sticky, codec, ready, suspending] = [0, 1, 2, 3].map(|job| median_of(&times, job));
    // Per-round ratios engine / baseline, then their median: robust to load changing mid-run.
    let ratio = |job: usize| {
        let mut ratios: Vec<f64> = times.iter().map(|round| round[0] / round[job]).collect();
        median(&mut ratios)
    };
    let sticky_step_ns = sticky.as_nanos() as f64 / total_steps;
    let sticky_steps_per_s = total_steps / sticky.as_secs_f64();
    let workflows_per_s = workflows as f64 / sticky.as_secs_f64();

    let mut starts = Vec::with_capacity(workflows);
    let mut samples = Vec::with_capacity(workflows * STEPS as usize);
    for i in 0..workflows {
        let id = WorkflowId::new(format!("wf-{i}"));
        let out = run_sticky_sampled(&bench, id, &input, STEPS, &mut starts, &mut samples);
        assert_eq!(out, u64::from(STEPS));
    }
    samples.sort_unstable();
    starts.sort_unstable();
    let mut timer: Vec<u64> = (0..10_000)
        .map(|_| {
            let t = Instant::now();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    timer.sort_unstable();

    let window = HeapWindow::begin();
    let counted = workflows.min(1_000);
    for i in 0..counted {
        black_box(run_sticky(
            &bench,
            WorkflowId::new(format!("wf-{i}")),
            &input,
            STEPS,
        ));
    }
    let (_, sticky_allocs) = window.end();
    let allocs_per_step = sticky_allocs as f64 / (counted * STEPS as usize) as f64;

    say!(
        s1,
        "    throughput        {}steps/s  {}workflows/s  ({}/step, {}/workflow incl. start)",
        si(sticky_steps_per_s),
        si(workflows_per_s),
        ns(sticky_step_ns),
        ns(sticky.as_nanos() as f64 / workflows as f64)
    );
    say!(
        s1,
        "    apply latency     p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        ns(percentile(&samples, 50.0) as f64),
        ns(percentile(&samples, 99.0) as f64),
        ns(percentile(&samples, 99.9) as f64),
        ns(*samples.last().expect("samples") as f64),
        thousands(samples.len())
    );
    say!(
        s1,
        "    start latency     p50 {}  p99 {}  (start + first poll, one command)",
        ns(percentile(&starts, 50.0) as f64),
        ns(percentile(&starts, 99.0) as f64),
    );
    say!(
        s1,
        "    allocations       {allocs_per_step:.1}/step (whole loop: workflow, engine and the \
         driver's completion payload; id and start amortized)"
    );
    say!(
        s1,
        "    (Instant::now() pair overhead p50 {}, included in latencies)",
        ns(percentile(&timer, 50.0) as f64)
    );

    // ---- 4. Baseline: the raw work without the engine. ----------------------------------------
    say!(
        s4,
        "[4] baseline without the engine, same counts, interleaved with [1] (median of {} rounds)",
        config.rounds
    );
    let per_step = |d: Duration| d.as_nanos() as f64 / total_steps;
    let mut row = |label: &str, d: Duration, job: usize| {
        say!(
            s4,
            "    {label:<40} {:>9}steps/s {:>8}/step   engine = {:>4.1}x its cost (+{}/step)",
            si(total_steps / d.as_secs_f64()),
            ns(per_step(d)),
            ratio(job),
            ns(sticky_step_ns - per_step(d))
        );
    };
    row("codec only (encode args+result, decode)", codec, 1);
    row("plain async fn, awaits of ready()", ready, 2);
    row("plain async fn, each await suspends", suspending, 3);

    // ---- 2. Cold replay. ----------------------------------------------------------------------
    let replay_steps = config.replay_steps;
    say!(
        s2,
        "[2] cold replay of a {}-step history, {} runs",
        thousands(replay_steps as usize),
        config.replay_runs
    );
    let (history, live_status) = run_recording(&bench, WorkflowId::new("test"), replay_steps);
    let live_output = output_of(&live_status);
    assert_eq!(live_output, u64::from(replay_steps));
    assert_eq!(history.scheduled().count(), replay_steps as usize);
    assert_eq!(history.completions().count(), replay_steps as usize);
    // The recording matches the tester's on the long run too. Timed: the tester runs the
    // workers' code (messages, commits, task attempts) on the in-memory store, so this is what
    // a step costs in a unit test, against the engine alone.
    let tester_started = Instant::now();
    let tested = block_on(
        WorkflowTester::new()
            .service(CounterDispatcher::new(PlusOne))
            .run(ChainImpl::default, ChainStub.run(replay_steps)),
    )
    .expect("the tester runs the workflow");
    let tester_time = tester_started.elapsed();
    assert!(
        tested.history == history,
        "recorded history differs from WorkflowTester's"
    );

    // Replaying all of it reproduces every command (replay parks on any mismatch) and the status.
    let check_full = |replayed: &infinitic_core::Replay| {
        assert!(
            replayed.status == live_status,
            "replay status {:?} differs from the live run's {live_status:?}",
            replayed.status
        );
        assert!(replayed.new_commands.is_empty() && replayed.instance.is_finished());
    };
    // Replaying all but the last step reproduces the live instance mid-run: the last command
    // comes out as new, and feeding the last completion finishes it with the live output.
    {
        let mut prefix = history.clone();
        let Some(HistoryEvent::Completed(last)) = prefix.events.pop() else {
            panic!("history ends with a completion");
        };
        let Some(HistoryEvent::Scheduled(last_command)) = prefix.events.pop() else {
            panic!("a scheduled command precedes the last completion");
        };
        let mut replayed = replay(&bench.definition, &prefix).expect("replays");
        assert!(replayed.status == Status::Running, "{:?}", replayed.status);
        assert!(
            replayed.new_commands == [last_command],
            "replay produced other commands"
        );
        let progress = progressed(replayed.instance.apply(last).expect("accepted"));
        assert!(progress.commands.is_empty() && progress.status == live_status);
    }
    for _ in 0..3 {
        check_full(&replay(&bench.definition, &history).expect("replays"));
    }
    // Each replay is paired with live (sticky) execution of as many steps, timed right after it,
    // so the ratio holds even when the machine's speed drifts.
    let live_batch = (replay_steps / STEPS) as usize;
    let mut replay_ns = Vec::with_capacity(config.replay_runs);
    let mut replay_vs_live = Vec::with_capacity(config.replay_runs);
    for _ in 0..config.replay_runs {
        let t = Instant::now();
        let replayed = replay(&bench.definition, &history).expect("replays");
        let replay_time = t.elapsed();
        check_full(&replayed);
        drop(replayed);
        let t = Instant::now();
        for i in 0..live_batch {
            let id = WorkflowId::new(format!("wf-{i}"));
            black_box(run_sticky(&bench, id, &input, STEPS));
        }
        let live_time = t.elapsed();
        replay_ns.push(replay_time.as_nanos() as u64);
        replay_vs_live.push(replay_time.as_secs_f64() / live_time.as_secs_f64());
    }
    replay_ns.sort_unstable();
    let replay_median = percentile(&replay_ns, 50.0) as f64;
    let replay_p99 = percentile(&replay_ns, 99.0) as f64;
    let replay_step = replay_median / f64::from(replay_steps);
    let replay_ratio = median(&mut replay_vs_live);

    let short = run_recording(&bench, WorkflowId::new("test"), STEPS).0;
    let short_output = Status::Completed(encode(&u64::from(STEPS)).expect("encodes"));
    let mut short_ns = Vec::new();
    let mut short_vs_live = Vec::new();
    for i in 0..10_000.min(workflows) {
        let t = Instant::now();
        let replayed = replay(&bench.definition, &short).expect("replays");
        let replay_time = t.elapsed();
        assert!(replayed.status == short_output && replayed.new_commands.is_empty());
        drop(replayed);
        let t = Instant::now();
        let id = WorkflowId::new(format!("wf-{i}"));
        black_box(run_sticky(&bench, id, &input, STEPS));
        let live_time = t.elapsed();
        short_ns.push(replay_time.as_nanos() as u64);
        short_vs_live.push(replay_time.as_secs_f64() / live_time.as_secs_f64());
    }
    short_ns.sort_unstable();
    let short_ratio = median(&mut short_vs_live);

    say!(
        s2,
        "    {}-step replay   median {}  p99 {}  min {}  ({}/step; {:.2}x running as many \
         steps live)",
        thousands(replay_steps as usize),
        ns(replay_median),
        ns(replay_p99),
        ns(replay_ns[0] as f64),
        ns(replay_step),
        replay_ratio
    );
    say!(
        s2,
        "    {STEPS}-step replay      median {}  p99 {}  ({:.2}x running one {STEPS}-step workflow \
         live; {} runs)",
        ns(percentile(&short_ns, 50.0) as f64),
        ns(percentile(&short_ns, 99.0) as f64),
        short_ratio,
        thousands(short_ns.len())
    );
    let tester_step = tester_time.as_secs_f64() * 1e9 / f64::from(replay_steps);
    say!(
        s2,
        "    WorkflowTester     {}-step run in {:.2} ms  ({:.1} us/step through the workers' code \
         and the in-memory store; {:.0}x a replayed step)",
        thousands(replay_steps as usize),
        tester_time.as_secs_f64() * 1e3,
        tester_step / 1e3,
        tester_step / replay_step
    );
    say!(
        s2,
        "    checked: history == WorkflowTester's; full replay == live status {}; replay of all \
         but the last step re-emits command #{} and finishes with the live output",
        live_output,
        replay_steps - 1
    );

    // ---- Summary. -----------------------------------------------------------------------------
    let ready_step = per_step(ready);
    let ready_ratio = ratio(2);
    for section in [&s1, &s2, &s3, &s4] {
        println!();
        print!("{section}");
    }
    println!();
    println!("summary ({:.1} s total)", wall.elapsed().as_secs_f64());
    println!(
        "  sticky: {}steps/s, {}workflows/s ({STEPS}-step); apply p50 {}, p99 {}",
        si(sticky_steps_per_s),
        si(workflows_per_s),
        ns(percentile(&samples, 50.0) as f64),
        ns(percentile(&samples, 99.0) as f64)
    );
    println!(
        "  baseline (plain async fn + same codec work): {}steps/s; engine = {:.1}x its cost per \
         step ({:.3} of its throughput, +{}/step)",
        si(total_steps / ready.as_secs_f64()),
        ready_ratio,
        1.0 / ready_ratio,
        ns(sticky_step_ns - ready_step)
    );
    println!(
        "  cold replay, {} steps: median {}, p99 {} ({}/step, {:.2}x live execution of as many \
         steps)",
        thousands(replay_steps as usize),
        ns(replay_median),
        ns(replay_p99),
        ns(replay_step),
        replay_ratio
    );
    println!(
        "  idle cached workflow: {:.0} B heap / {} RSS (parked on step 1), {:.0} B heap on step 5",
        per(heap_1 as f64),
        rss_per(rss_1).trim(),
        per(heap_5 as f64)
    );
}
