//! What a service implementation can know about the task it is running: its stable id (use it
//! as an idempotency key with your APIs) and the attempt number.
//!
//! ```
//! use infinitic_core::task;
//! assert!(task::current().is_none()); // outside a task
//! ```

use crate::limits::scoped;
use crate::{CommandId, Limits};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The running task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// Stable across retries, redeliveries and worker crashes: the command that requested it.
    pub id: CommandId,
    /// Attempt number, from 1: deliveries of the task's stored message. A worker starts a task
    /// as soon as the commit recording it is submitted; if it crashes before that commit is on
    /// disk, the task is scheduled anew on recovery and counts from 1 again (same `id`).
    pub attempt: u32,
}

thread_local! {
    static CURRENT: RefCell<Option<TaskInfo>> = const { RefCell::new(None) };
}

/// The task being run by the calling service code, if any.
pub fn current() -> Option<TaskInfo> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The id of the task being run by the calling service code.
///
/// # Panics
/// Outside service code run by a worker or `WorkflowTester`.
pub fn id() -> CommandId {
    current()
        .map(|t| t.id)
        .expect("infinitic::task::id() called outside a service task")
}

/// Runs a service future with its [`TaskInfo`] available through [`current`], and its
/// [`Limits`] through [`Limits::current`] (what the result is encoded within), while it is
/// polled.
#[derive(Debug)]
pub struct WithTask<F> {
    info: TaskInfo,
    limits: Limits,
    inner: Pin<Box<F>>,
}

impl<F: Future> WithTask<F> {
    /// Wraps `future`, with the default limits.
    pub fn new(info: TaskInfo, future: F) -> Self {
        Self {
            info,
            limits: Limits::default(),
            inner: Box::pin(future),
        }
    }

    /// Sets the limits the task's result is encoded within.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

impl<F: Future> Future for WithTask<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let info = self.info.clone();
        let previous = CURRENT.with(|c| c.replace(Some(info)));
        // Restored even if the service panics (the dispatcher catches the panic above us).
        struct Restore(Option<TaskInfo>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
        let _restore = Restore(previous);
        let limits = self.limits;
        scoped(limits, || self.inner.as_mut().poll(cx))
    }
}
