//! Turning panics into values: a panicking service or workflow must never take a worker down.
//!
//! A panic that infinitic catches is a value (a parked run, a [`TaskError::Panicked`]), so it
//! should not also be printed by the default panic hook as if the thread had died. The hook
//! runs before unwinding reaches `catch_unwind`, so it must be told: [`catch_quietly`] sets a
//! thread-local flag while the guarded code runs, and a hook reads it with
//! [`catching_panics`]. The hook itself lives in the runtime (which logs through `tracing`):
//! installing a process-wide hook and logging are effects, and this crate has none; the flag
//! is only a per-thread variable.
//!
//! [`TaskError::Panicked`]: crate::TaskError::Panicked

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// Set while this thread runs code whose panics are caught and turned into values.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, catching a panic; while `f` runs, [`catching_panics`] is true on this thread so
/// a panic hook can report the panic as caught instead of printing it.
///
/// `f` is asserted unwind-safe: after a panic, callers drop whatever `f` touched (the
/// workflow's future, the task's future) and keep only the message.
///
/// ```
/// use infinitic_core::{catch_quietly, catching_panics};
/// assert!(!catching_panics());
/// assert_eq!(catch_quietly(catching_panics).ok(), Some(true));
/// assert!(catch_quietly(|| panic!("caught")).is_err());
/// assert!(!catching_panics());
/// ```
pub fn catch_quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    /// Restores the flag however `f` ends, so nested calls keep the outer value.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CATCHING.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(CATCHING.with(|flag| flag.replace(true)));
    catch_unwind(AssertUnwindSafe(f))
}

/// Whether this thread is running code under [`catch_quietly`]: a panic now will be caught
/// and reported as a value.
pub fn catching_panics() -> bool {
    CATCHING.with(Cell::get)
}

/// The readable message of a caught panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Wraps a future so that a panic while polling it becomes `Err(message)` (polled under
/// [`catch_quietly`]).
///
/// ```
/// # let waker = std::task::Waker::noop();
/// # let mut cx = std::task::Context::from_waker(&waker);
/// use infinitic_core::CatchUnwind;
/// use std::future::Future;
/// let mut f = std::pin::pin!(CatchUnwind::new(async { panic!("boom") }));
/// assert_eq!(f.as_mut().poll(&mut cx), std::task::Poll::Ready(Err::<(), _>("boom".to_string())));
/// ```
#[derive(Debug)]
pub struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    /// Wraps `future`.
    pub fn new(future: F) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_quietly(|| inner.poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}
