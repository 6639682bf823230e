//! The embedded runtime end to end: SQLite store on a real file, workers, client.

#[allow(dead_code)]
#[path = "../examples/billing/contracts.rs"]
mod contracts;
#[allow(dead_code)]
#[path = "../examples/billing/services.rs"]
mod services;
#[allow(dead_code)]
#[path = "../examples/billing/workflow.rs"]
mod workflow;

use contracts::*;
use infinitic::store::sqlite::OpenMode;
use infinitic::{Client, RetryPolicy, SqliteStore, Worker, WorkerConfig};
use services::*;
use std::path::PathBuf;
use std::time::Duration;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infinitic-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("infinitic.db")
}

fn billing_worker(store: SqliteStore, months: u32) -> Worker<SqliteStore> {
    Worker::new(store)
        .service(SubscriptionServiceDispatcher::new(
            FixedTermSubscriptions::new(workflow::month_of(std::time::SystemTime::now()), months),
        ))
        .service(ConsumptionServiceDispatcher::new(Metering))
        .service(PaymentServiceDispatcher::new(Payments::new(Some(UserId(
            3,
        )))))
        .service(InvoiceServiceDispatcher::new(Invoicing))
        .service(EmailServiceDispatcher::new(Mailer))
        .workflow(workflow::Billing::default)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(10),
            retry: RetryPolicy {
                max_attempts: 3,
                initial_delay: Duration::from_millis(5),
                ..RetryPolicy::default()
            },
            ..WorkerConfig::default()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_runs_end_to_end_on_the_embedded_store() {
    let path = temp_db("billing");
    let store = SqliteStore::open(&path, OpenMode::CreateIfMissing).unwrap();
    let running = billing_worker(store.clone(), 3).start();
    let client = Client::new(store);
    let mut handles = Vec::new();
    for user in 1..=3 {
        let subscription = Subscription {
            user: UserId(user),
            period: Period::every(Duration::from_millis(20)),
        };
        handles.push(
            client
                .dispatch_with_id(
                    format!("billing-{user}"),
                    BillingWorkflowStub.run(subscription),
                )
                .await
                .unwrap(),
        );
    }
    for (i, handle) in handles.iter().enumerate() {
        let summary = tokio::time::timeout(Duration::from_secs(30), handle.result())
            .await
            .expect("finishes in time")
            .expect("completes")
            .expect("no step failed");
        if i == 2 {
            assert_eq!(summary.months_billed, 0);
            assert_eq!(summary.declined.len(), 3);
        } else {
            assert_eq!(summary.months_billed, 3);
        }
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
