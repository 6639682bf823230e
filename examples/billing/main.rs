//! The billing workflow of the seed article, run for a few users.
//!
//! Today this runs in-process with `WorkflowTester`: real service implementations, virtual
//! time (a year of monthly timers passes at once), full histories. The embedded durable
//! runtime will run the same workflow on a local store.
//!
//! Run: `cargo run --example billing`

mod contracts;
mod services;
mod workflow;

use contracts::*;
use infinitic::prelude::*;
use services::*;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let users = [UserId(1), UserId(2), UserId(3)];
    for user in users {
        println!("[user {}] workflow started: billing monthly", user.0);
        let tester = WorkflowTester::new()
            .with_id(format!("billing-{}", user.0))
            .service(SubscriptionServiceDispatcher::new(
                FixedTermSubscriptions::new(3 + u32::try_from(user.0).unwrap_or(0)),
            ))
            .service(ConsumptionServiceDispatcher::new(Metering))
            .service(PaymentServiceDispatcher::new(Payments::new(Some(UserId(
                3,
            )))))
            .service(InvoiceServiceDispatcher::new(Invoicing))
            .service(EmailServiceDispatcher::new(Mailer));
        let subscription = Subscription {
            user,
            period: Period::CalendarMonth,
        };
        match tester
            .run(workflow::Billing::default, BillingWorkflowStub.run(subscription))
            .await
        {
            Ok(run) => match run.output {
                Ok(summary) => println!(
                    "[user {}] workflow completed: {} month(s) billed, {} total, {} declined; {} history events over {} virtual days\n",
                    user.0,
                    summary.months_billed,
                    dollars(summary.total),
                    summary.declined.len(),
                    run.history.events.len(),
                    run.elapsed.as_secs() / 86_400,
                ),
                Err(error) => println!("[user {}] workflow ended with an error: {}\n", user.0, error.0),
            },
            Err(error) => {
                eprintln!("[user {}] workflow did not complete: {error}", user.0);
                std::process::exit(1);
            }
        }
    }
}
