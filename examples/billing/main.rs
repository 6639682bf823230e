//! The billing workflow of the seed article on the embedded durable runtime: one SQLite file,
//! no server. Each month, while a user is subscribed: wait for the next month, get the
//! consumption, request payment, create the invoice, email it.
//!
//! ```text
//! cargo run --example billing                      # worker + client in one process
//! cargo run --example billing -- worker            # a worker process ...
//! cargo run --example billing -- client            # ... and a client process, same file
//! cargo run --example billing -- status billing-user-1
//! options: --db PATH (default billing.db)  --month-ms N (default 1000)  --users N (default 3)
//!          --months N (subscription length, default 3)  --fresh (delete the database first)
//! ```
//!
//! Instance ids are stable (`billing-user-N`): stop the program at any moment (Ctrl-C, or
//! `kill -9`), run it again, and the workflows go on from where they were.
//!
//! Logs go to stderr, at `warn` unless `RUST_LOG` says otherwise (for instance
//! `RUST_LOG=infinitic=info` to see retries, `RUST_LOG=infinitic=debug` for more).

mod contracts;
mod services;
mod workflow;

use contracts::*;
use infinitic::store::sqlite::OpenMode;
use infinitic::{Client, RetryPolicy, SqliteStore, Worker, WorkerConfig, WorkflowState};
use services::*;
use std::time::{Duration, Instant};

struct Options {
    mode: String,
    target: Option<String>,
    db: String,
    month: Duration,
    users: u64,
    months: u32,
    fresh: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        mode: "all".into(),
        target: None,
        db: "billing.db".into(),
        month: Duration::from_millis(1000),
        users: 3,
        months: 3,
        fresh: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--db" => o.db = value("--db")?,
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
            "all" | "worker" | "client" | "status" => o.mode = arg,
            other if o.mode == "status" && o.target.is_none() => o.target = Some(other.to_string()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
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
            eprintln!("{e}\nusage: billing [all|worker|client|status ID] [--db PATH] [--month-ms N] [--users N] [--months N] [--fresh]");
            std::process::exit(2);
        }
    };
    if o.fresh {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", o.db));
        }
    }
    // Workers create the file; a client or a status query needs it to exist.
    let mode = if matches!(o.mode.as_str(), "client" | "status") {
        OpenMode::MustExist
    } else {
        OpenMode::CreateIfMissing
    };
    let store = match SqliteStore::open(&o.db, mode) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open the store: {e}");
            std::process::exit(1);
        }
    };
    match o.mode.as_str() {
        "worker" => {
            println!("worker running on {} (Ctrl-C to stop)", o.db);
            worker(store, &o).run_until_signal().await;
            println!("worker stopped: in-flight steps finished and committed");
        }
        "client" => run_clients(store, &o).await,
        "status" => {
            let id = o.target.clone().unwrap_or_else(|| "billing-user-1".into());
            match Client::new(store).status(&id.as_str().into()).await {
                Ok(Some(state)) => println!("{id}: {}", describe(&state)),
                Ok(None) => println!("{id}: no such workflow"),
                Err(e) => eprintln!("{id}: {e}"),
            }
        }
        _ => {
            let running = worker(store.clone(), &o).start();
            tokio::select! {
                _ = run_clients(store, &o) => {}
                _ = infinitic::worker::shutdown_signal() => println!("interrupted: run again to resume"),
            }
            running.shutdown().await;
        }
    }
}

fn worker(store: SqliteStore, o: &Options) -> Worker<SqliteStore> {
    Worker::new(store)
        .service(SubscriptionServiceDispatcher::new(
            FixedTermSubscriptions::new(workflow::month_of(std::time::SystemTime::now()), o.months),
        ))
        .service(ConsumptionServiceDispatcher::new(Metering))
        .service(PaymentServiceDispatcher::new(Payments::new(Some(UserId(
            3,
        )))))
        .service(InvoiceServiceDispatcher::new(Invoicing))
        .service(EmailServiceDispatcher::new(Mailer))
        .workflow(workflow::Billing::default)
        .config(WorkerConfig {
            // Demo settings: quick retries of declined payments, quick recovery after kill -9.
            retry: RetryPolicy {
                max_attempts: 2,
                initial_delay: Duration::from_millis(100),
                ..RetryPolicy::default()
            },
            workflow_lease: Duration::from_secs(2),
            task_lease_margin: Duration::from_secs(2),
            task_timeout: Duration::from_secs(5),
            ..WorkerConfig::default()
        })
}

async fn run_clients(store: SqliteStore, o: &Options) {
    let client = Client::new(store);
    let started = Instant::now();
    let mut handles = Vec::new();
    for user in 1..=o.users {
        let id = format!("billing-user-{user}");
        let subscription = Subscription {
            user: UserId(user),
            period: Period::every(o.month),
        };
        match client
            .dispatch_with_id(id.clone(), BillingWorkflowStub.run(subscription))
            .await
        {
            Ok(handle) => {
                let state = handle
                    .status()
                    .await
                    .map(|s| describe(&s))
                    .unwrap_or_default();
                println!("[user {user}] workflow {id}: {state}");
                handles.push((user, handle));
            }
            Err(e) => eprintln!("[user {user}] cannot start: {e}"),
        }
    }
    // User 1 leaves half-way through the second month: a signal, applied at the next month
    // boundary. (Run again on the same database, the signal goes to an ended workflow.)
    if o.months > 1 {
        tokio::time::sleep(o.month + o.month / 2).await;
        let unsubscribe = Unsubscribe {
            reason: "moving abroad".into(),
        };
        match client
            .signal(
                "billing-user-1",
                BillingWorkflowStub.unsubscribe(),
                unsubscribe,
            )
            .await
        {
            Ok(()) => println!("[user 1] sent unsubscribe"),
            Err(e) => println!("[user 1] unsubscribe not sent: {e}"),
        }
    }
    for (user, handle) in handles {
        match handle.result().await {
            Ok(Ok(summary)) => println!(
                "[user {user}] workflow completed: {} month(s) billed, {} total, {} declined{} ({:.1?} since this client started)",
                summary.months_billed,
                dollars(summary.total),
                summary.declined.len(),
                summary
                    .unsubscribed
                    .map(|reason| format!(", unsubscribed: {reason}"))
                    .unwrap_or_default(),
                started.elapsed()
            ),
            Ok(Err(error)) => println!("[user {user}] workflow ended with an error: {}", error.0),
            Err(error) => println!("[user {user}] workflow did not complete: {error}"),
        }
    }
}

fn describe(state: &WorkflowState) -> String {
    match state {
        WorkflowState::Pending => "started (waiting for a worker)".into(),
        WorkflowState::Running => "running".into(),
        WorkflowState::Completed(_) => "completed".into(),
        WorkflowState::Parked(reason) => format!("parked: {reason}"),
        WorkflowState::Failed(reason) => format!("failed: {reason}"),
    }
}
