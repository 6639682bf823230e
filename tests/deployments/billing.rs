//! The billing example's workflow and services over three short months (`Period::EveryMillis`)
//! for two users at once: one billed each month, one whose card is always declined.

#[allow(dead_code)]
#[path = "../../examples/billing/contracts.rs"]
mod contracts;
#[allow(dead_code)]
#[path = "../../examples/billing/services.rs"]
mod services;
#[allow(dead_code)]
#[path = "../../examples/billing/workflow.rs"]
mod workflow;

use crate::{finish, retries, Deployment};
use contracts::*;
use services::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Records every email, so the test can check each invoice was sent once.
#[derive(Default, Clone)]
struct RecordingMailer(Arc<Mutex<Vec<String>>>);

impl EmailService for RecordingMailer {
    async fn send(&self, _user: UserId, invoice: Invoice) {
        self.0.lock().unwrap().push(invoice.number);
    }
}

const MONTHS: u32 = 3;
const PAYING: UserId = UserId(7);
const DECLINED: UserId = UserId(8);

pub async fn bills_short_months_and_skips_declined_payments<D: Deployment>(d: D) {
    let month = Duration::from_millis(150);
    // Short months are labelled as calendar months from the one the workflow starts in.
    let first = workflow::month_of(SystemTime::now());
    let mailer = RecordingMailer::default();
    let worker = d.start(retries(3, Duration::from_millis(50)), |w| {
        w.service(SubscriptionServiceDispatcher::new(
            FixedTermSubscriptions::new(first, MONTHS),
        ))
        .service(ConsumptionServiceDispatcher::new(Metering))
        .service(PaymentServiceDispatcher::new(Payments::new(Some(DECLINED))))
        .service(InvoiceServiceDispatcher::new(Invoicing))
        .service(EmailServiceDispatcher::new(mailer.clone()))
        .workflow(workflow::Billing::default)
    });
    let client = d.client();
    let started = Instant::now();
    let mut handles = Vec::new();
    for user in [PAYING, DECLINED] {
        let subscription = Subscription {
            user,
            period: Period::every(month),
        };
        let id = format!("billing-{}", user.0);
        let call = BillingWorkflowStub.run(subscription);
        handles.push(client.dispatch_with_id(id, call).await.unwrap());
    }
    let paid = finish(&d, &handles[0]).await.expect("no step failed");
    let declined = finish(&d, &handles[1]).await.expect("no step failed");
    let elapsed = started.elapsed();

    let months: Vec<Month> = (0..MONTHS)
        .scan(first, |m, _| {
            let this = *m;
            *m = workflow::next_month(this);
            Some(this)
        })
        .collect();
    let invoices: Vec<String> = months
        .iter()
        .map(|m| format!("INV-7-{}{:02}", m.year, m.month))
        .collect();
    let total: u64 = months
        .iter()
        .map(|m| (10 + (7 * 7 + u64::from(m.month) * 3) % 40) * 25)
        .sum();
    assert_eq!(
        paid,
        BillingSummary {
            months_billed: MONTHS,
            total: Cents(total),
            invoices: invoices.clone(),
            declined: Vec::new(),
            unsubscribed: None,
        }
    );
    assert_eq!(
        declined,
        BillingSummary {
            declined: months,
            ..BillingSummary::default()
        }
    );
    assert_eq!(
        *mailer.0.lock().unwrap(),
        invoices,
        "each invoice emailed once, in order"
    );
    // One timer per month, plus the one after which the subscription has ended.
    assert!(
        elapsed >= month * (MONTHS + 1),
        "the months were not shortened further: {elapsed:?}"
    );
    d.stop(worker).await;
}
