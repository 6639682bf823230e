//! The billing workflow of the seed article. Each month, while a user is subscribed: wait for
//! the next month, get the consumption, request payment, create the invoice, email it.
//!
//! ```text
//! cargo run --example billing                      # worker + client in one process, embedded
//! cargo run --example billing -- worker            # a worker process ...
//! cargo run --example billing -- client            # ... and a client process, same file
//! cargo run --example billing -- status billing-user-1
//!
//! # Three processes on Apache Pulsar + PostgreSQL (see the README):
//! cargo run --features postgres,pulsar --example billing -- service-worker --config examples/billing/distributed.toml
//! cargo run --features postgres,pulsar --example billing -- workflow-worker --config examples/billing/distributed.toml
//! cargo run --features postgres,pulsar --example billing -- client --config examples/billing/distributed.toml
//!
//! options: --config FILE (default: examples/billing/embedded.toml, built in)
//!          --db PATH (embedded only: the database file, default billing.db)
//!          --month-ms N (default 1000)  --users N (default 3)
//!          --months N (subscription length, default 3)  --fresh (embedded only: delete the database first)
//! ```
//!
//! Every mode runs on the deployment its configuration file names; `worker` hosts the
//! services and the workflow, `service-worker` the services only, `workflow-worker` the
//! workflow only. Environment variables override the file (`INFINITIC_<SECTION>_<KEY>`).
//!
//! Instance ids are stable (`billing-user-N`): stop the program at any moment (Ctrl-C, or
//! `kill -9`), run it again, and the workflows go on from where they were.
//!
//! Logs go to stderr, at `warn` unless `RUST_LOG` says otherwise (for instance
//! `RUST_LOG=infinitic=info` to see retries, `RUST_LOG=infinitic=debug` for more).

mod clients;
mod contracts;
#[cfg(all(feature = "postgres", feature = "pulsar"))]
mod distributed;
mod hosts;
mod services;
mod workflow;

use hosts::Role;
use infinitic::config::{Config, Deployment, EmbeddedSection};
use infinitic::store::sqlite::OpenMode;
use infinitic::{Client, Worker};
use std::time::Duration;

/// The embedded configuration used without `--config`, built in so the example runs from any
/// directory; the same file ships beside this one.
const EMBEDDED: &str = include_str!("embedded.toml");

/// What the command line asked for.
pub struct Options {
    mode: String,
    target: Option<String>,
    config: Option<String>,
    db: Option<String>,
    month: Duration,
    users: u64,
    months: u32,
    fresh: bool,
}

const USAGE: &str = "usage: billing [all|worker|service-worker|workflow-worker|client|status ID] \
[--config FILE] [--db PATH] [--month-ms N] [--users N] [--months N] [--fresh]";

fn options() -> Result<Options, String> {
    let mut o = Options {
        mode: "all".into(),
        target: None,
        config: None,
        db: None,
        month: Duration::from_millis(1000),
        users: 3,
        months: 3,
        fresh: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--config" => o.config = Some(value("--config")?),
            "--db" => o.db = Some(value("--db")?),
            "--month-ms" => {
                let ms = value("--month-ms")?;
                o.month =
                    Duration::from_millis(ms.parse().map_err(|_| format!("bad --month-ms {ms}"))?);
            }
            "--users" => {
                let n = value("--users")?;
                o.users = n.parse().map_err(|_| format!("bad --users {n}"))?;
            }
            "--months" => {
                let n = value("--months")?;
                o.months = n.parse().map_err(|_| format!("bad --months {n}"))?;
            }
            "--fresh" => o.fresh = true,
            "all" | "worker" | "service-worker" | "workflow-worker" | "client" | "status" => {
                o.mode = arg
            }
            other if o.mode == "status" && o.target.is_none() => o.target = Some(other.to_string()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

/// The configuration: `--config FILE`, or the built-in embedded one; then `--db`.
fn config(o: &Options) -> Result<Config, String> {
    let mut config = match &o.config {
        Some(path) => Config::load(path),
        None => Config::from_toml_and_env(EMBEDDED, "examples/billing/embedded.toml (built in)"),
    }
    .map_err(|e| e.to_string())?;
    config.check_build().map_err(|e| e.to_string())?;
    let origin = config.origin().to_string();
    match config.deployment_mut() {
        Deployment::Embedded(embedded) => {
            if let Some(db) = &o.db {
                embedded.path = db.into();
            }
        }
        Deployment::Distributed { .. } if o.db.is_some() || o.fresh => {
            return Err(format!(
            "--db and --fresh apply to the embedded deployment; {origin} names the distributed one"
        ))
        }
        Deployment::Distributed { .. } => {}
    }
    Ok(config)
}

#[tokio::main]
async fn main() {
    // The runtime logs through `tracing` (it never prints): show it on stderr, so stdout keeps
    // the example's own lines.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let config = match config(&o) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match config.deployment() {
        Deployment::Embedded(embedded) => embedded_run(embedded, &config, &o).await,
        #[cfg(all(feature = "postgres", feature = "pulsar"))]
        Deployment::Distributed { pulsar, postgres } => {
            distributed::run(pulsar, postgres, &config, &o).await
        }
        // `check_build` refused it above.
        #[cfg(not(all(feature = "postgres", feature = "pulsar")))]
        Deployment::Distributed { .. } => unreachable!("refused by Config::check_build"),
    }
}

/// Every mode on the embedded store, one SQLite file shared by the processes.
async fn embedded_run(embedded: &EmbeddedSection, config: &Config, o: &Options) {
    let db = embedded.path.display().to_string();
    if o.fresh {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{db}{suffix}"));
        }
    }
    // Workers create the file; a client or a status query needs it to exist.
    let mode = if matches!(o.mode.as_str(), "client" | "status") {
        OpenMode::MustExist
    } else {
        OpenMode::CreateIfMissing
    };
    let store = match embedded.open(mode) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open the store: {e}");
            std::process::exit(1);
        }
    };
    let client = Client::new(store.clone()).with_limits(config.limits());
    match o.mode.as_str() {
        "client" => clients::run(&client, o.users, o.months, o.month).await,
        "status" => clients::status(&client, o.target.as_deref().unwrap_or("billing-user-1")).await,
        "all" => {
            let running = hosts::register(Worker::new(store), Role::Both, config, o, None).start();
            tokio::select! {
                _ = clients::run(&client, o.users, o.months, o.month) => {}
                _ = infinitic::worker::shutdown_signal() => println!("interrupted: run again to resume"),
            }
            running.shutdown().await;
        }
        role => hosts::serve(Worker::new(store), Role::of(role), config, o, &db, None).await,
    }
}
