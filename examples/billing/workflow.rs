//! The billing workflow: each month, while the user is subscribed (and has not sent the
//! `unsubscribe` signal), wait for the next month, get the consumption, request payment,
//! create the invoice and email it.

use super::contracts::*;
use infinitic::prelude::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The implementation: only stubs, no state. Each `.await` on a stub is a durable step.
#[derive(Default)]
pub struct Billing {
    subscriptions: SubscriptionServiceStub,
    consumption: ConsumptionServiceStub,
    payment: PaymentServiceStub,
    invoice: InvoiceServiceStub,
    email: EmailServiceStub,
}

#[workflow]
impl BillingWorkflow for Billing {
    async fn run(&self, subscription: Subscription) -> Result<BillingSummary, BillingError> {
        let user = subscription.user;
        let mut summary = BillingSummary::default();
        let first_month = month_of(workflow::now());
        for index in 0.. {
            // 1. Wait for the next month: a durable timer, it survives crashes and redeploys.
            let (billed_month, next) =
                next_period(subscription.period, first_month, index, workflow::now());
            workflow::sleep_until(next).await;
            // An `unsubscribe` signal (buffered since it arrived) ends it here.
            if self.unsubscribe().is_buffered() {
                summary.unsubscribed = Some(self.unsubscribe().receive().await.reason);
                return Ok(summary);
            }
            if !self.subscriptions.is_subscribed(user, billed_month).await? {
                return Ok(summary);
            }
            // 2-5. Each call is a durable step: recorded, never repeated once done.
            let usage = self.consumption.get(user, billed_month).await?;
            let receipt = match self.payment.request(user, usage.cost()).await {
                Ok(receipt) => receipt,
                Err(StepError::Failed {
                    error: PaymentError::Declined { .. },
                    ..
                }) => {
                    summary.declined.push(billed_month);
                    continue;
                }
                Err(other) => return Err(other.into()),
            };
            let invoice = self.invoice.create(usage, receipt).await?;
            summary.months_billed += 1;
            summary.total.0 += invoice.amount.0;
            summary.invoices.push(invoice.number.clone());
            self.email.send(user, invoice).await?;
        }
        Ok(summary)
    }
}

/// The month being billed in the `index`-th period and when its billing starts. Shortened
/// months are labelled as consecutive calendar months from `first`.
pub fn next_period(
    period: Period,
    first: Month,
    index: u32,
    now: SystemTime,
) -> (Month, SystemTime) {
    match period {
        Period::CalendarMonth => {
            let current = month_of(now);
            (current, start_of(next_month(current)))
        }
        Period::EveryMillis(millis) => {
            let month = (0..index).fold(first, |m, _| next_month(m));
            (month, now + Duration::from_millis(millis))
        }
    }
}

/// The calendar month (UTC) that contains `t`.
pub fn month_of(t: SystemTime) -> Month {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let (year, month, _) = civil_from_days(days);
    Month { year, month }
}

pub fn next_month(m: Month) -> Month {
    if m.month == 12 {
        Month {
            year: m.year + 1,
            month: 1,
        }
    } else {
        Month {
            year: m.year,
            month: m.month + 1,
        }
    }
}

/// Midnight UTC on the first day of `m`.
pub fn start_of(m: Month) -> SystemTime {
    let days = days_from_civil(m.year, m.month, 1);
    UNIX_EPOCH + Duration::from_secs(u64::try_from(days).unwrap_or(0) * 86_400)
}

// Gregorian calendar <-> days since 1970-01-01, by 400-year eras (146,097 days each).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}
