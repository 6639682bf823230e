//! The engine's runtime guards: what the compile-time checks cannot see is caught when the
//! workflow runs, and parks the instance instead of hanging or corrupting it.

use infinitic::prelude::*;
use infinitic::{ParkReason, TesterError};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[service]
pub trait Echo {
    async fn echo(&self, n: u64) -> u64;
}

struct EchoImpl;
impl Echo for EchoImpl {
    async fn echo(&self, n: u64) -> u64 {
        n
    }
}

/// Returns `Pending` once after waking its own waker: what `tokio::task::yield_now` does.
struct YieldOnce(bool);
impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[workflow]
pub trait Guarded {
    async fn run(&self, case: u8) -> u64;
}

#[derive(Default)]
pub struct GuardedImpl {
    echo: EchoStub,
}

#[workflow]
impl Guarded for GuardedImpl {
    async fn run(&self, case: u8) -> u64 {
        match case {
            // Waits forever on something that is not durable.
            0 => {
                std::future::pending::<()>().await;
                0
            }
            // Woken by something other than the engine, while a durable step is pending.
            1 => {
                let (n, ()) = workflow::join2(self.echo.echo(1), YieldOnce(false)).await;
                n.unwrap_or(0)
            }
            // Panics after one step.
            2 => {
                let n = self.echo.echo(2).await.unwrap_or(0);
                assert!(n > 100, "n is only {n}");
                n
            }
            _ => self.echo.echo(3).await.unwrap_or(0),
        }
    }
}

async fn park_reason(case: u8) -> ParkReason {
    let result = WorkflowTester::new()
        .service(EchoDispatcher::new(EchoImpl))
        .run(GuardedImpl::default, GuardedStub.run(case))
        .await;
    match result {
        Err(TesterError::Parked { reason, .. }) => reason,
        other => panic!("case {case} should park, got {other:?}"),
    }
}

#[tokio::test]
async fn awaiting_a_non_durable_future_parks_instead_of_hanging() {
    assert_eq!(park_reason(0).await, ParkReason::NonDurableAwait);
}

#[tokio::test]
async fn a_wake_from_outside_the_engine_parks_the_instance() {
    assert_eq!(park_reason(1).await, ParkReason::ForeignWake);
}

#[tokio::test]
async fn a_panicking_workflow_is_parked_with_its_message_and_history_intact() {
    let result = WorkflowTester::new()
        .service(EchoDispatcher::new(EchoImpl))
        .run(GuardedImpl::default, GuardedStub.run(2))
        .await;
    let Err(TesterError::Parked { reason, history }) = result else {
        panic!("should park, got {result:?}");
    };
    assert_eq!(
        reason,
        ParkReason::Panicked {
            message: "n is only 2".into()
        }
    );
    assert_eq!(history.scheduled().count(), 1);
    assert_eq!(history.completions().count(), 1);
}

#[tokio::test]
async fn a_well_behaved_run_completes() {
    let run = WorkflowTester::new()
        .service(EchoDispatcher::new(EchoImpl))
        .run(GuardedImpl::default, GuardedStub.run(3))
        .await
        .unwrap();
    assert_eq!(run.output, 3);
}

#[test]
#[should_panic(expected = "outside a running workflow")]
fn workflow_api_outside_a_workflow_panics_with_a_clear_message() {
    let _ = workflow::now();
}
