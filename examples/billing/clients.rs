//! The client side of the example: start one billing workflow per user, unsubscribe user 1
//! half-way through the second month, await every result.

use super::contracts::*;
use super::services::dollars;
use infinitic::store::StateStore;
use infinitic::{Client, WorkflowState};
use std::time::{Duration, Instant};

/// Starts the workflows `billing-user-1..=users`, each billed every `month`, and prints how
/// each one ended.
pub async fn run<S: StateStore + Clone>(
    client: &Client<S>,
    users: u64,
    months: u32,
    month: Duration,
) {
    let started = Instant::now();
    let mut handles = Vec::new();
    for user in 1..=users {
        let id = format!("billing-user-{user}");
        let subscription = Subscription {
            user: UserId(user),
            period: Period::every(month),
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
    if months > 1 {
        tokio::time::sleep(month + month / 2).await;
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

/// Prints where instance `id` stands.
pub async fn status<S: StateStore + Clone>(client: &Client<S>, id: &str) {
    match client.status(&id.into()).await {
        Ok(Some(state)) => println!("{id}: {}", describe(&state)),
        Ok(None) => println!("{id}: no such workflow"),
        Err(e) => eprintln!("{id}: {e}"),
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
