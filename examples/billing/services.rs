//! Demo implementations of the billing services. They print what they do, so a person can
//! follow the workflow; real ones would call your APIs.

use super::contracts::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every user is subscribed for a fixed number of months from a first month: stateless, so
/// a restarted worker answers as before.
pub struct FixedTermSubscriptions {
    end: Month,
}

impl FixedTermSubscriptions {
    /// Subscribed for `months` months starting with `first`.
    pub fn new(first: Month, months: u32) -> Self {
        let end = (0..months).fold(first, |m, _| super::workflow::next_month(m));
        Self { end }
    }
}

impl SubscriptionService for FixedTermSubscriptions {
    async fn is_subscribed(&self, user: UserId, month: Month) -> bool {
        let subscribed = month < self.end;
        if !subscribed {
            println!("[user {}] unsubscribed: billing ends", user.0);
        }
        subscribed
    }
}

/// Usage that depends on user and month, so every invoice differs.
pub struct Metering;

impl ConsumptionService for Metering {
    async fn get(&self, user: UserId, month: Month) -> Consumption {
        let units = 10 + (user.0 * 7 + u64::from(month.month) * 3) % 40;
        println!(
            "[user {}] {}-{:02}: consumption is {units} units",
            user.0, month.year, month.month
        );
        Consumption { user, month, units }
    }
}

/// Accepts every payment, except those of `declined_user` (if any).
pub struct Payments {
    /// A user whose card is always declined.
    pub declined_user: Option<UserId>,
    next_id: AtomicU64,
}

impl Payments {
    /// A payment provider declining `declined_user`'s card.
    pub fn new(declined_user: Option<UserId>) -> Self {
        Self {
            declined_user,
            next_id: AtomicU64::new(1),
        }
    }
}

impl PaymentService for Payments {
    async fn request(&self, user: UserId, amount: Cents) -> Result<Receipt, PaymentError> {
        if Some(user) == self.declined_user {
            println!("[user {}] payment of {} declined", user.0, dollars(amount));
            return Err(PaymentError::Declined {
                reason: "insufficient funds".into(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        println!(
            "[user {}] payment of {} requested: pay-{id}",
            user.0,
            dollars(amount)
        );
        Ok(Receipt {
            payment_id: format!("pay-{id}"),
            amount,
        })
    }
}

/// Numbers invoices per user and month.
pub struct Invoicing;

impl InvoiceService for Invoicing {
    async fn create(&self, consumption: Consumption, receipt: Receipt) -> Invoice {
        let number = format!(
            "INV-{}-{}{:02}",
            consumption.user.0, consumption.month.year, consumption.month.month
        );
        println!("[user {}] invoice {number} created", consumption.user.0);
        Invoice {
            number,
            user: consumption.user,
            month: consumption.month,
            amount: receipt.amount,
        }
    }
}

/// Prints instead of sending.
pub struct Mailer;

impl EmailService for Mailer {
    async fn send(&self, user: UserId, invoice: Invoice) {
        println!("[user {}] invoice {} emailed", user.0, invoice.number);
    }
}

/// `1234` cents as `$12.34`.
pub fn dollars(amount: Cents) -> String {
    format!("${}.{:02}", amount.0 / 100, amount.0 % 100)
}
