// A service method returning `Result<T, E>`: its stub yields `Result<T, StepError<E>>`, so a
// workflow uses `?` and `match` on it, and sees the service's own error type.
use infinitic::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
    pub cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentError {
    Declined { code: u16 },
    Fraud,
}

#[service]
pub trait Payments {
    async fn charge(&self, user: String, cents: u64) -> Result<Receipt, PaymentError>;
    async fn refund(&self, receipt: Receipt) -> Result<(), PaymentError>;
}

pub struct Bank;

impl Payments for Bank {
    async fn charge(&self, user: String, cents: u64) -> Result<Receipt, PaymentError> {
        match user.as_str() {
            "mallory" => Err(PaymentError::Fraud),
            _ if cents > 10_000 => Err(PaymentError::Declined { code: 51 }),
            _ => Ok(Receipt {
                id: format!("r-{user}"),
                cents,
            }),
        }
    }

    async fn refund(&self, _receipt: Receipt) -> Result<(), PaymentError> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Paid(Receipt),
    Declined(u16),
    Blocked,
    Broken(String),
}

#[workflow]
pub trait Billing {
    /// Propagates any failure with `?`.
    async fn charge_then_refund(
        &self,
        user: String,
        cents: u64,
    ) -> Result<u64, StepError<PaymentError>>;
    /// Handles each failure with `match`.
    async fn charge(&self, user: String, cents: u64) -> Outcome;
}

#[derive(Default)]
pub struct BillingImpl {
    payments: PaymentsStub,
}

#[workflow]
impl Billing for BillingImpl {
    async fn charge_then_refund(
        &self,
        user: String,
        cents: u64,
    ) -> Result<u64, StepError<PaymentError>> {
        let receipt: Receipt = self.payments.charge(user, cents).await?;
        let amount = receipt.cents;
        let () = self.payments.refund(receipt).await?;
        Ok(amount)
    }

    async fn charge(&self, user: String, cents: u64) -> Outcome {
        match self.payments.charge(user, cents).await {
            Ok(receipt) => Outcome::Paid(receipt),
            Err(StepError::Failed {
                error: PaymentError::Declined { code },
                ..
            }) => Outcome::Declined(code),
            Err(StepError::Failed {
                error: PaymentError::Fraud,
                ..
            }) => Outcome::Blocked,
            Err(other) => Outcome::Broken(other.to_string()),
        }
    }
}

fn tester() -> WorkflowTester {
    WorkflowTester::new().service(PaymentsDispatcher::new(Bank))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let run = tester()
        .run(
            BillingImpl::default,
            BillingStub.charge_then_refund("ada".into(), 500),
        )
        .await
        .expect("completes");
    assert_eq!(run.output, Ok(500));

    let run = tester()
        .run(
            BillingImpl::default,
            BillingStub.charge_then_refund("ada".into(), 50_000),
        )
        .await
        .expect("completes");
    assert_eq!(
        run.output,
        Err(StepError::Failed {
            error: PaymentError::Declined { code: 51 },
            // Retried by the default policy, as a worker does.
            attempts: 5
        })
    );

    let cases = [
        (
            "ada",
            500,
            Outcome::Paid(Receipt {
                id: "r-ada".into(),
                cents: 500,
            }),
        ),
        ("ada", 50_000, Outcome::Declined(51)),
        ("mallory", 500, Outcome::Blocked),
    ];
    for (user, cents, expected) in cases {
        let run = tester()
            .run(BillingImpl::default, BillingStub.charge(user.into(), cents))
            .await
            .expect("completes");
        assert_eq!(run.output, expected);
    }

    // A failure injected by the tester reaches the workflow as the same typed error.
    let run = tester()
        .fail_next("Payments", "charge", PaymentError::Fraud)
        .run(BillingImpl::default, BillingStub.charge("ada".into(), 500))
        .await
        .expect("completes");
    assert_eq!(run.output, Outcome::Blocked);
}
