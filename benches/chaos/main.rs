//! Chaos: 500 workflows with durable timers and child workflows run across two workflow
//! workers and two service workers (separate processes: this binary run again with a role),
//! while workers of each kind are SIGKILLed and respawned several times at random moments, and
//! the broker and PostgreSQL are each SIGKILLed and restarted once. Then it checks, on the
//! stored histories and the services' side-effect file: every workflow completed with the
//! right result, no step applied twice, every timer fired once and not early, and how many
//! tasks ran more than once (at-least-once execution when a service worker dies mid-task:
//! reported, not a failure). It prints what it did and what it found; it exits non-zero when
//! a check fails.
//!
//! Run (as root: the scripts start PostgreSQL as `postgres`):
//!
//! ```text
//! cargo bench --features postgres,pulsar --bench chaos                 # 500 workflows, 4 kills of each worker kind
//! cargo bench --features postgres,pulsar --bench chaos -- --quick      # 50 workflows, 1 kill of each
//! cargo bench --features postgres,pulsar --bench chaos -- --workflows 200 --kills 3 --seed 7
//! ```
//!
//! It starts PostgreSQL (fsync on) with `scripts/postgres.sh` unless `INFINITIC_PG_URL` and
//! `INFINITIC_PG_DIR` are set, and always a broker of its own with `scripts/pulsar.sh` in
//! `$INFINITIC_PULSAR_RUN/chaos-PID` (default `/tmp`), since it kills it.

#[allow(dead_code)] // each program uses part of it
#[path = "../support/servers.rs"]
mod servers;

mod checks;
mod flows;
mod orchestra;

use flows::Role;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(i) = args.iter().position(|a| a == "--role") {
        let role = args
            .get(i + 1)
            .and_then(|r| Role::parse(r))
            .expect("--role workflow-worker|service-worker");
        runtime.block_on(flows::worker_process(role));
        return;
    }
    let options = orchestra::Options::parse(&args);
    let ok = runtime.block_on(orchestra::run(options));
    std::process::exit(if ok { 0 } else { 1 });
}
