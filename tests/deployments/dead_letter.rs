//! A workflow compiled against another version of a service's contract calls a method the
//! worker lacks: the task is dead-lettered with the reason, and the waiting step fails with
//! `StepError::Unknown` carrying it.

use crate::dead_letters::show;
use crate::{dead_letters_until, finish, retries, Deployment};
use infinitic::prelude::*;
use std::time::Duration;

/// What the worker serves.
#[service]
pub trait Echo {
    async fn echo(&self, n: u64) -> u64;
}

/// The same service seen by a newer workflow: one method more. Only its stub is used.
#[allow(dead_code)]
#[service(name = "Echo")]
pub trait EchoV2 {
    async fn echo(&self, n: u64) -> u64;
    async fn shout(&self) -> String;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, n: u64) -> u64 {
        n
    }
}

#[workflow]
pub trait Shouter {
    async fn run(&self) -> String;
}

#[derive(Default)]
pub struct ShouterImpl {
    echo: EchoV2Stub,
}

#[workflow]
impl Shouter for ShouterImpl {
    async fn run(&self) -> String {
        show(self.echo.shout().await)
    }
}

pub async fn a_method_the_worker_lacks_is_unknown_and_dead_lettered<D: Deployment>(d: D) {
    let worker = d.start(retries(3, Duration::from_millis(50)), |w| {
        w.service(EchoDispatcher::new(EchoImpl))
            .workflow(ShouterImpl::default)
    });
    let handle = d
        .client()
        .dispatch_with_id("shouter-1", ShouterStub.run())
        .await
        .unwrap();
    let reason = "`Echo` has no method `shout`";
    assert_eq!(
        finish(&d, &handle).await,
        format!("Unknown {{ reason: {reason:?} }}")
    );
    let letters = dead_letters_until(&d, |l| !l.is_empty()).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].topic, "service:Echo");
    assert_eq!(letters[0].reason, reason);
    d.stop(worker).await;
}
