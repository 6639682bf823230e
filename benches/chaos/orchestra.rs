//! The orchestrator: servers, worker processes, the chaos schedule, then the checks.

use crate::checks::{self, Findings};
use crate::flows::{self, Backends, Role, RootStub};
use crate::servers::{Broker, Postgres};
use infinitic::store::postgres::{PostgresOptions, PostgresStore};
use infinitic::store::pulsar::{PulsarOptions, PulsarTransport};
use infinitic::{Client, StateStore, WorkflowId, WorkflowState};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Command-line options.
pub struct Options {
    workflows: u64,
    kills: u32,
    seed: u64,
    patience: Duration,
    /// Workflow and service worker processes (2 and 2 unless told).
    counts: [u64; 2],
}

impl Options {
    pub fn parse(args: &[String]) -> Self {
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name} N")))
        };
        let quick = args.iter().any(|a| a == "--quick");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            workflows: value("--workflows").unwrap_or(if quick { 50 } else { 500 }),
            kills: value("--kills").map_or(if quick { 1 } else { 4 }, |k| k.max(1) as u32),
            seed: value("--seed").unwrap_or(now % 1_000_000),
            patience: Duration::from_secs(value("--patience-s").unwrap_or(if quick {
                180
            } else {
                600
            })),
            counts: [
                value("--workflow-workers").unwrap_or(2).max(1),
                value("--service-workers").unwrap_or(2).max(1),
            ],
        }
    }
}

/// xorshift64*: enough randomness to pick moments and victims, reproducible by `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A duration between `low` and `high` ms.
    fn ms(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low + 1))
    }
}

/// The worker processes, two of each kind.
struct Workers {
    backends: Vec<(&'static str, String)>,
    logs: PathBuf,
    procs: Vec<(Role, usize, Child)>,
    spawned: usize,
}

impl Workers {
    fn spawn(&mut self, role: Role, slot: usize) -> u32 {
        self.spawned += 1;
        let log = |kind: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.logs.join(format!("{}-{slot}.{kind}", role.name())))
                .expect("worker log")
        };
        let child = Command::new(std::env::current_exe().expect("this program"))
            .args(["--role", role.name()])
            .envs(self.backends.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .expect("spawn a worker");
        let pid = child.id();
        self.procs.push((role, slot, child));
        pid
    }

    /// SIGKILLs the worker in `slot` of `role`; its pid.
    fn kill(&mut self, role: Role, slot: usize) -> u32 {
        let index = self
            .procs
            .iter()
            .position(|(r, s, _)| *r == role && *s == slot)
            .expect("a worker in that slot");
        let (_, _, mut child) = self.procs.remove(index);
        let pid = child.id();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        pid
    }

    /// Closes every worker's stdin (they shut down), then kills the ones still running.
    async fn stop(&mut self) {
        for (_, _, child) in &mut self.procs {
            drop(child.stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (_, _, child) in &mut self.procs {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What happened, stamped with the time since the start; printed as it happens.
struct Log(Instant, Vec<String>);

impl Log {
    fn say(&mut self, what: String) {
        let line = format!("[{:>6.1}s] {what}", self.0.elapsed().as_secs_f64());
        println!("{line}");
        self.1.push(line);
    }
}

/// Dispatches `Root::run(n)` for `ns`, retrying while the database is down; the retries.
async fn dispatch(client: &Client<PostgresStore>, ns: std::ops::Range<u64>) -> u32 {
    let mut retries = 0;
    for n in ns {
        while let Err(e) = client.dispatch_with_id(root_id(n), RootStub.run(n)).await {
            retries += 1;
            if retries % 20 == 1 {
                eprintln!("dispatch chaos-{n}: {e} (retrying)");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    retries
}

fn root_id(n: u64) -> WorkflowId {
    WorkflowId::new(format!("chaos-{n}"))
}

pub async fn run(options: Options) -> bool {
    let began = Instant::now();
    let mut log = Log(began, Vec::new());
    let mut rng = Rng(options.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let run_dir = std::env::temp_dir().join(format!("infinitic-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).expect("run dir");
    println!(
        "chaos: {} workflows (each: 2 steps, a {:?} timer, 2 child workflows of 2 steps and a {:?} timer) \
         on {} workflow workers and {} service workers, {} SIGKILLs of each worker kind, seed {}; logs in {}",
        options.workflows,
        flows::ROOT_TIMER,
        flows::LEAF_TIMER,
        options.counts[0],
        options.counts[1],
        options.kills,
        options.seed,
        run_dir.display()
    );

    let pg = Postgres::from_env_or_start();
    let broker_root = std::env::var_os("INFINITIC_PULSAR_RUN")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(format!("chaos-{}", std::process::id()));
    let broker = Broker::start(&broker_root);
    log.say(format!(
        "servers: PostgreSQL (fsync {}) at {}, broker at {} (run dir {})",
        pg.fsync(),
        pg.url.rsplit('@').next().unwrap_or_default(),
        broker.url,
        broker_root.display()
    ));

    let backends = Backends {
        pg_url: pg.url.clone(),
        schema: format!("chaos_{stamp}"),
        pulsar: PulsarOptions::new(&broker.url)
            .with_topic_prefix(format!("chaos{stamp}"))
            .with_subscription(format!("chaos{stamp}")),
        effects: run_dir.join("side-effects.log"),
    };
    let state = PostgresStore::connect(
        &pg.url,
        PostgresOptions {
            schema: backends.schema.clone(),
            ..PostgresOptions::default()
        },
    )
    .await
    .expect("connect to PostgreSQL");
    // The client over the broker, as an application would run it: starts travel on Pulsar;
    // PostgreSQL is only read (the checks below read it too).
    let transport = PulsarTransport::connect(backends.pulsar.clone())
        .await
        .expect("connect to the broker");
    let client = Client::with_backends(transport.clone(), state.clone()).with_clock(state.clock());
    let mut workers = Workers {
        backends: backends.env(),
        logs: run_dir.clone(),
        procs: Vec::new(),
        spawned: 0,
    };
    for (role, count) in [Role::Workflows, Role::Services]
        .into_iter()
        .zip(options.counts)
    {
        for slot in 0..count as usize {
            let pid = workers.spawn(role, slot);
            log.say(format!("spawned {}#{slot} (pid {pid})", role.name()));
        }
    }

    // Rounds: each dispatches a share of the workflows, then kills one worker of each kind at
    // random moments; the broker dies in one round and PostgreSQL in another, while the
    // workflows of the earlier rounds wait on timers and children.
    let rounds = options.kills as u64;
    let broker_round = if rounds > 1 { 1 } else { 0 };
    let pg_round = rounds - 1;
    let mut dispatch_retries = 0;
    let (mut worker_kills, mut broker_kills, mut pg_kills) = ([0u32; 2], 0, 0);
    for round in 0..rounds {
        let from = options.workflows * round / rounds;
        let to = options.workflows * (round + 1) / rounds;
        dispatch_retries += dispatch(&client, from..to).await;
        log.say(format!("dispatched chaos-{from}..chaos-{}", to - 1));
        // The servers die first in their round, while that round's workflows wait on their
        // first steps and timers (the timers then sit in the broker).
        if round == broker_round {
            tokio::time::sleep(rng.ms(300, 1500)).await;
            broker.kill();
            broker_kills += 1;
            log.say("SIGKILL the broker".into());
            tokio::time::sleep(rng.ms(1000, 4000)).await;
            log.say("restarting the broker".into());
            let restart = broker_root.clone();
            tokio::task::spawn_blocking(move || Broker::restart_at(&restart))
                .await
                .expect("restart the broker");
            log.say("broker ready again".into());
        }
        if round == pg_round {
            tokio::time::sleep(rng.ms(300, 1500)).await;
            pg.kill();
            pg_kills += 1;
            log.say("SIGKILL PostgreSQL (postmaster)".into());
            tokio::time::sleep(rng.ms(1000, 4000)).await;
            pg.restart();
            log.say("PostgreSQL restarted (crash recovery done)".into());
        }
        for (k, role) in [Role::Workflows, Role::Services].into_iter().enumerate() {
            tokio::time::sleep(rng.ms(500, 3000)).await;
            let slot = (rng.next() % options.counts[k]) as usize;
            let pid = workers.kill(role, slot);
            worker_kills[k] += 1;
            log.say(format!("SIGKILL {}#{slot} (pid {pid})", role.name()));
            tokio::time::sleep(rng.ms(200, 2000)).await;
            let pid = workers.spawn(role, slot);
            log.say(format!("respawned {}#{slot} (pid {pid})", role.name()));
        }
    }
    log.say(format!(
        "chaos over: {} SIGKILLs of workflow workers, {} of service workers, broker {broker_kills}x, PostgreSQL {pg_kills}x; waiting for every workflow",
        worker_kills[0], worker_kills[1]
    ));

    // Every root workflow ends (the store is polled: no broker client here).
    let mut results = Vec::new();
    let mut pending: Vec<u64> = (0..options.workflows).collect();
    let mut last_report = Instant::now();
    while !pending.is_empty() && began.elapsed() < options.patience {
        let mut still = Vec::new();
        for n in pending {
            match client.status(&root_id(n)).await {
                Ok(Some(WorkflowState::Running | WorkflowState::Pending)) | Err(_) => still.push(n),
                Ok(Some(done)) => results.push((n, done)),
                Ok(None) => still.push(n),
            }
        }
        pending = still;
        if last_report.elapsed() > Duration::from_secs(10) {
            log.say(format!("{} of {} done", results.len(), options.workflows));
            last_report = Instant::now();
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    log.say(format!(
        "{} of {} workflows ended{}",
        results.len(),
        options.workflows,
        if pending.is_empty() {
            String::new()
        } else {
            format!(
                "; still running after {:?}: {:?}",
                options.patience,
                &pending[..pending.len().min(10)]
            )
        }
    ));

    // The relay published every committed message (checked while the workers still run).
    let mut outbox = state
        .outbox(100)
        .await
        .map(|o| o.len())
        .unwrap_or(usize::MAX);
    let deadline = Instant::now() + Duration::from_secs(15);
    while outbox > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        outbox = state
            .outbox(100)
            .await
            .map(|o| o.len())
            .unwrap_or(usize::MAX);
    }
    workers.stop().await;

    let ok = report(&state, &options, results, pending.len(), outbox, &backends).await;
    println!(
        "did: {} worker processes spawned in all; SIGKILLed {} workflow workers and {} service \
         workers; broker SIGKILLed and restarted {broker_kills}x; PostgreSQL SIGKILLed and \
         restarted {pg_kills}x; {dispatch_retries} dispatch retries; {:.1}s in all",
        workers.spawned,
        worker_kills[0],
        worker_kills[1],
        began.elapsed().as_secs_f64()
    );
    println!("{}", if ok { "CHAOS: PASS" } else { "CHAOS: FAIL" });
    drop(broker);
    drop(pg);
    if ok {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    ok
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    match sorted.len() {
        0 => 0,
        n => sorted[((n - 1) as f64 * q).round() as usize],
    }
}

/// Checks and prints; whether everything held.
async fn report(
    state: &PostgresStore,
    options: &Options,
    results: Vec<(u64, WorkflowState)>,
    unfinished: usize,
    outbox: usize,
    backends: &Backends,
) -> bool {
    let mut wrong = Vec::new();
    for (n, done) in &results {
        let right = match done {
            WorkflowState::Completed(bytes) => {
                infinitic::decode::<Result<u64, String>>(bytes).ok()
                    == Some(Ok(flows::expected(*n)))
            }
            _ => false,
        };
        if !right {
            wrong.push(format!("chaos-{n}: {done:?}"));
        }
    }
    let mut findings = Findings::default();
    for n in 0..options.workflows {
        checks::check_tree(state, root_id(n), &mut findings).await;
    }
    let effects = checks::effects(&backends.effects, &findings.calls);
    let mut late = findings.timer_lateness_ms.clone();
    late.sort_unstable();
    let checks = [
        (
            format!("every workflow completed ({} of {})", results.len() - wrong.len(), options.workflows),
            unfinished == 0,
        ),
        (
            format!("with the right result (21n + 108): {} wrong", wrong.len()),
            wrong.is_empty(),
        ),
        (
            format!(
                "histories of {} instances ({} roots and their children), {} commands: {} service calls, {} timers, {} children, {} wake-up records; none missing ({})",
                findings.instances, options.workflows, findings.commands, findings.service_calls, findings.timers, findings.children, findings.timer_lateness_ms.len() + findings.early_timers, findings.missing
            ),
            findings.missing == 0 && findings.instances as u64 == 3 * options.workflows,
        ),
        (
            format!("no step applied twice (a position completed twice): {}", findings.applied_twice),
            findings.applied_twice == 0,
        ),
        (
            format!("no command scheduled twice: {}", findings.scheduled_twice),
            findings.scheduled_twice == 0,
        ),
        (
            format!("every command completed (timers: none lost): {} never completed", findings.never_completed),
            findings.never_completed == 0,
        ),
        (
            format!(
                "no timer fired early (the wall clock recorded when the code resumed >= the due time): {} early of {}; resumed after the due time by p50 {} ms, p99 {} ms, max {} ms",
                findings.early_timers,
                findings.timer_lateness_ms.len() + findings.early_timers,
                quantile(&late, 0.5), quantile(&late, 0.99), quantile(&late, 1.0)
            ),
            findings.early_timers == 0 && findings.timer_lateness_ms.len() == findings.timers,
        ),
        (
            format!(
                "every step's side effect happened: {} lines for {} steps, {} missing, {} of no recorded step",
                effects.lines, findings.service_calls, effects.missing, effects.unknown
            ),
            effects.missing == 0 && effects.unknown == 0,
        ),
        (
            format!("the outbox is empty (every commit's messages relayed): {outbox} left"),
            outbox == 0,
        ),
    ];
    println!("checks:");
    let mut ok = true;
    for (what, held) in &checks {
        println!("  [{}] {what}", if *held { "ok" } else { "FAILED" });
        ok &= held;
    }
    println!(
        "  [info] tasks run more than once (at-least-once execution: a service worker killed mid-task, or a redelivery): {} steps, {} extra runs",
        effects.repeated_steps, effects.extra_runs
    );
    for example in &effects.examples {
        println!("         {example}");
    }
    for problem in wrong.iter().take(10).chain(&findings.problems) {
        println!("  problem: {problem}");
    }
    ok
}
