//! The seed's billing workflow over a year of virtual time, with `WorkflowTester`.

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
use infinitic::prelude::*;
use infinitic::{
    replay, Command, Completion, History, HistoryEvent, StepOutcome, TesterError, WorkflowFactory,
    WorkflowInstance,
};
use services::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Records every email, so the test can check each side effect happened once.
#[derive(Default, Clone)]
struct RecordingMailer(Arc<Mutex<Vec<String>>>);

impl EmailService for RecordingMailer {
    async fn send(&self, _user: UserId, invoice: Invoice) {
        self.0.lock().unwrap().push(invoice.number);
    }
}

const USER: UserId = UserId(7);
const JANUARY: Month = Month {
    year: 2026,
    month: 1,
};

fn tester(months: u32, mailer: RecordingMailer) -> WorkflowTester {
    WorkflowTester::new()
        .with_id("billing-7")
        .service(SubscriptionServiceDispatcher::new(
            FixedTermSubscriptions::new(JANUARY, months),
        ))
        .service(ConsumptionServiceDispatcher::new(Metering))
        .service(PaymentServiceDispatcher::new(Payments::new(None)))
        .service(InvoiceServiceDispatcher::new(Invoicing))
        .service(EmailServiceDispatcher::new(mailer))
}

fn subscription() -> Subscription {
    Subscription {
        user: USER,
        period: Period::CalendarMonth,
    }
}

/// A year of billing with every service behaving.
async fn a_year() -> infinitic::TestRun<Result<BillingSummary, BillingError>> {
    tester(12, RecordingMailer::default())
        .run(
            workflow::Billing::default,
            BillingWorkflowStub.run(subscription()),
        )
        .await
        .expect("the workflow returns")
}

fn calls_in(history: &History, service: &str) -> usize {
    history
        .scheduled()
        .filter(|r| matches!(&r.command, Command::CallService { service: s, .. } if s == service))
        .count()
}

#[tokio::test]
async fn bills_twelve_months_then_stops_when_unsubscribed() {
    let mailer = RecordingMailer::default();
    let run = tester(12, mailer.clone())
        .run(
            workflow::Billing::default,
            BillingWorkflowStub.run(subscription()),
        )
        .await
        .expect("the workflow returns");
    let summary = run.output.expect("no step failed");

    let expected: Vec<String> = (1..=12).map(|m| format!("INV-7-2026{m:02}")).collect();
    assert_eq!(summary.months_billed, 12);
    assert_eq!(summary.invoices, expected);
    assert_eq!(
        *mailer.0.lock().unwrap(),
        expected,
        "each invoice emailed exactly once"
    );
    let total: u64 = (1..=12u64).map(|m| (10 + (7 * 7 + m * 3) % 40) * 25).sum();
    assert_eq!(summary.total, Cents(total));

    // Each month is billed when it ends: January on 2026-02-01, ..., December on 2027-01-01;
    // the 13th check, on 2027-02-01, finds the user unsubscribed.
    assert_eq!(run.elapsed, Duration::from_secs((365 + 31) * 86_400));
    assert_eq!(
        run.finished_at,
        workflow::start_of(Month {
            year: 2027,
            month: 2
        })
    );

    let h = &run.history;
    let timers: Vec<SystemTime> = h
        .scheduled()
        .filter_map(|r| match r.command {
            Command::StartTimer { fire_at } => Some(fire_at.to_system_time()),
            _ => None,
        })
        .collect();
    let month_starts: Vec<SystemTime> = (2..=14)
        .map(|m| {
            let (year, month) = if m > 12 { (2027, m - 12) } else { (2026, m) };
            workflow::start_of(Month { year, month })
        })
        .collect();
    assert_eq!(
        timers, month_starts,
        "one durable timer per month, on the 1st"
    );
    assert_eq!(calls_in(h, "SubscriptionService"), 13);
    for service in [
        "ConsumptionService",
        "PaymentService",
        "InvoiceService",
        "EmailService",
    ] {
        assert_eq!(calls_in(h, service), 12, "{service} called once a month");
    }
    // Every scheduled command completed exactly once.
    assert_eq!(h.scheduled().count(), h.completions().count());
}

#[tokio::test]
async fn the_history_replays_to_the_same_result_with_nothing_new_to_do() {
    let run = a_year().await;
    let definition = WorkflowFactory::new(workflow::Billing::default);
    let replayed = replay(&definition, &run.history).unwrap();
    assert!(replayed.new_commands.is_empty());
    match replayed.status {
        infinitic::Status::Completed(bytes) => {
            let output: Result<BillingSummary, BillingError> = infinitic::decode(&bytes).unwrap();
            assert_eq!(output, run.output);
        }
        other => panic!("replay should complete, got {other:?}"),
    }
}

#[tokio::test]
async fn a_worker_that_crashed_mid_year_resumes_from_history_exactly_where_it_stopped() {
    let run = a_year().await;
    let definition = WorkflowFactory::new(workflow::Billing::default);
    let events = &run.history.events;
    // "Crash" after each completion in turn: rebuild from the prefix, then feed the rest.
    let cuts: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, HistoryEvent::Completed(_)))
        .map(|(i, _)| i + 1)
        .step_by(7)
        .collect();
    assert!(cuts.len() > 5);
    for cut in cuts {
        let mut prefix = run.history.clone();
        prefix.events.truncate(cut);
        let resumed = replay(&definition, &prefix).unwrap();
        let mut instance: WorkflowInstance = resumed.instance;
        let mut rebuilt = prefix.clone();
        rebuilt.record_scheduled(&resumed.new_commands);
        let mut status = resumed.status;
        for event in &events[cut..] {
            if let HistoryEvent::Completed(c) = event {
                let applied = instance.apply(c.clone()).unwrap();
                let infinitic::Applied::Progressed(progress) = applied else {
                    panic!("each recorded completion is new to the resumed instance")
                };
                rebuilt.events.push(HistoryEvent::Completed(c.clone()));
                rebuilt.record_scheduled(&progress.commands);
                status = progress.status;
            }
        }
        assert_eq!(
            rebuilt, run.history,
            "resumed after event {cut}: same commands"
        );
        assert!(matches!(status, infinitic::Status::Completed(_)));
    }
}

#[tokio::test]
async fn a_declined_payment_skips_that_month_and_billing_goes_on() {
    let run = tester(12, RecordingMailer::default())
        .fail_next(
            PaymentServiceStub::NAME,
            "request",
            PaymentError::Declined {
                reason: "card expired".into(),
            },
        )
        .run(
            workflow::Billing::default,
            BillingWorkflowStub.run(subscription()),
        )
        .await
        .unwrap();
    let summary = run.output.unwrap();
    assert_eq!(
        summary.declined,
        vec![Month {
            year: 2026,
            month: 1
        }]
    );
    assert_eq!(summary.months_billed, 11);
    assert_eq!(
        summary.invoices.first().map(String::as_str),
        Some("INV-7-202602")
    );
}

#[tokio::test]
async fn an_email_that_times_out_fails_the_workflow_with_a_typed_error() {
    let run = tester(12, RecordingMailer::default())
        .inject(
            EmailServiceStub::NAME,
            "send",
            StepOutcome::TimedOut { attempts: 5 },
            1,
        )
        .run(
            workflow::Billing::default,
            BillingWorkflowStub.run(subscription()),
        )
        .await
        .unwrap();
    assert_eq!(
        run.output,
        Err(BillingError("timed out after 5 attempt(s)".into()))
    );
    assert_eq!(
        run.elapsed,
        Duration::from_secs(31 * 86_400),
        "failed in the first billing"
    );
}

#[tokio::test]
async fn a_missing_service_makes_the_run_wait_and_says_on_what() {
    let result = WorkflowTester::new()
        .service(SubscriptionServiceDispatcher::new(
            FixedTermSubscriptions::new(JANUARY, 3),
        ))
        .run(
            workflow::Billing::default,
            BillingWorkflowStub.run(subscription()),
        )
        .await;
    // As on a runtime where no worker serves it: the call waits, visibly.
    let Err(TesterError::Waiting { description, .. }) = result else {
        panic!("the run should wait on the missing service, got {result:?}");
    };
    assert!(
        description.to_string().contains("ConsumptionService"),
        "{description}"
    );
}

#[test]
fn completions_for_unknown_commands_are_rejected() {
    let definition = WorkflowFactory::new(workflow::Billing::default);
    let input = infinitic::encode(&(subscription(),)).unwrap();
    let (mut instance, progress) = WorkflowInstance::start(
        &definition,
        infinitic::Start {
            generation: infinitic::Generation::FIRST,
            workflow_id: "w".into(),
            run: infinitic::MethodRun(0),
            method: "run",
            input: &input,
            at: infinitic::Timestamp::from_millis(0),
        },
    )
    .unwrap();
    assert_eq!(progress.commands.len(), 1, "the first month's timer");
    let bogus = Completion {
        run: infinitic::MethodRun(0),
        position: 99,
        at: infinitic::Timestamp::from_millis(1),
        outcome: StepOutcome::Completed(vec![]),
    };
    let rejected = instance.apply(bogus).unwrap_err();
    assert!(rejected.to_string().contains("no command at position 99"));
}

#[tokio::test]
async fn an_unsubscribe_signal_ends_billing_at_the_next_month_boundary() {
    let mailer = RecordingMailer::default();
    let day = Duration::from_secs(86_400);
    let run = tester(12, mailer.clone())
        // Sent on February 15th: January was billed on February 1st, March 1st ends it.
        .signal(
            45 * day,
            BillingWorkflowStub.unsubscribe(),
            Unsubscribe {
                reason: "moving abroad".into(),
            },
        )
        .run(
            workflow::Billing::default,
            BillingWorkflowStub.run(subscription()),
        )
        .await
        .unwrap();
    let summary = run.output.unwrap();
    assert_eq!(summary.unsubscribed.as_deref(), Some("moving abroad"));
    assert_eq!(summary.months_billed, 1);
    assert_eq!(mailer.0.lock().unwrap().len(), 1, "one invoice emailed");
    assert_eq!(run.elapsed, 59 * day, "ended on March 1st");
    // The signal was buffered on arrival (the workflow was sleeping) and taken on March 1st.
    assert!(run.history.signals().all(|s| s.to.is_none()));
}
