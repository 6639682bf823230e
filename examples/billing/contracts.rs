//! The billing example's contracts: the services the workflow calls and the workflow itself.
//! In a real deployment these traits live in a small crate shared by clients and workers.

use infinitic::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub u64);

/// An amount of money in cents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cents(pub u64);

/// A billing period: the year and month (1-12) being billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Month {
    /// Year.
    pub year: i32,
    /// Month of the year, 1-12.
    pub month: u32,
}

/// What a user consumed in a month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumption {
    /// Who.
    pub user: UserId,
    /// When.
    pub month: Month,
    /// Units used.
    pub units: u64,
}

impl Consumption {
    /// Price: 25 cents a unit.
    pub fn cost(&self) -> Cents {
        Cents(self.units * 25)
    }
}

/// Proof of payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The payment provider's id.
    pub payment_id: String,
    /// Amount paid.
    pub amount: Cents,
}

/// Why a payment was not made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentError {
    /// The card was declined.
    Declined {
        /// The provider's reason.
        reason: String,
    },
}

/// An invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// Invoice number.
    pub number: String,
    /// Billed user.
    pub user: UserId,
    /// Billed month.
    pub month: Month,
    /// Amount.
    pub amount: Cents,
}

/// Is the user still subscribed? (Checked at the start of each month.)
#[service]
pub trait SubscriptionService {
    /// True if the user's subscription covers `month`.
    async fn is_subscribed(&self, user: UserId, month: Month) -> bool;
}

/// Usage metering.
#[service]
pub trait ConsumptionService {
    /// The user's consumption for a month.
    async fn get(&self, user: UserId, month: Month) -> Consumption;
}

/// The payment provider.
#[service]
pub trait PaymentService {
    /// Charges the user; a declined card is the service's own error.
    async fn request(&self, user: UserId, amount: Cents) -> Result<Receipt, PaymentError>;
}

/// Invoicing.
#[service]
pub trait InvoiceService {
    /// Creates the invoice for a paid month.
    async fn create(&self, consumption: Consumption, receipt: Receipt) -> Invoice;
}

/// Email delivery.
#[service]
pub trait EmailService {
    /// Sends the invoice to the user.
    async fn send(&self, user: UserId, invoice: Invoice);
}

/// How long a billing "month" is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Period {
    /// Calendar months: bill at the start of each month (UTC).
    CalendarMonth,
    /// A shortened month, for demos: bill every this many milliseconds.
    EveryMillis(u64),
}

impl Period {
    /// A shortened month.
    pub fn every(duration: Duration) -> Self {
        Period::EveryMillis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A subscription to bill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The subscriber.
    pub user: UserId,
    /// The billing period.
    pub period: Period,
}

/// What a subscription's billing came to when it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingSummary {
    /// Months invoiced.
    pub months_billed: u32,
    /// Total charged.
    pub total: Cents,
    /// Invoice numbers, in order.
    pub invoices: Vec<String>,
    /// Months whose payment was declined (not invoiced).
    pub declined: Vec<Month>,
    /// Why the user unsubscribed, if they did (the `unsubscribe` signal).
    #[serde(default)]
    pub unsubscribed: Option<String>,
}

/// A user's request to stop their subscription: sent as a signal, it ends the billing at
/// the next month boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// What the user said.
    pub reason: String,
}

/// A step failed for a reason the workflow does not handle itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingError(pub String);

impl<E: std::fmt::Debug> From<StepError<E>> for BillingError {
    fn from(failure: StepError<E>) -> Self {
        BillingError(failure.to_string())
    }
}

/// Bills a subscriber every month while they are subscribed.
#[workflow]
pub trait BillingWorkflow {
    /// Runs until the user unsubscribes; returns what was billed.
    async fn run(&self, subscription: Subscription) -> Result<BillingSummary, BillingError>;

    /// The user unsubscribes: billing ends at the next month boundary.
    #[channel]
    fn unsubscribe(&self) -> Channel<Unsubscribe>;
}
