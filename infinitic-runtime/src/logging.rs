//! What the runtime logs, through [`tracing`]; the library never prints.
//!
//! Install any `tracing` subscriber to see it (the billing example uses `tracing-subscriber`
//! with `RUST_LOG`). Spans:
//! - `workflow` around each event a workflow worker handles (one transition): fields
//!   `workflow` (its name) and `id` (the instance id);
//! - `task` around each task attempt: `service`, `method`, `task` (the task id, that is the
//!   command id) and `attempt`.
//!
//! Events, at `warn` unless said otherwise: a workflow `parked` (with `reason`); a message
//! `dead-lettered` (with `reason`); a task attempt that failed and will be retried (`info`, with
//! `delay_ms` and `error`), or that failed for good; an event held back for later; store
//! errors; and panics caught in workflow or service code (`error`, with `panic` and
//! `location`). Repeated identical problems (a full disk fails every operation) are logged
//! once per interval with the count held back (`held_back`).

use std::panic::PanicHookInfo;
use std::sync::Once;

/// Routes panics that infinitic catches (workflow code, turned into a park; service code,
/// turned into a failure) to `tracing` instead of the default "thread panicked" message; every
/// other panic still reaches the hook that was installed before.
///
/// Called by [`Worker::start`](crate::worker::Worker::start) and
/// [`WorkflowTester::new`](crate::tester::WorkflowTester::new); idempotent (installed once per
/// process). A hook set afterwards replaces it.
pub fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if infinitic_core::catching_panics() {
                report_caught(info);
            } else {
                previous(info);
            }
        }));
    });
}

/// One event per caught panic, in the span of the transition or task attempt it happened in.
fn report_caught(info: &PanicHookInfo<'_>) {
    let panic = infinitic_core::panic_message(info.payload());
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
    tracing::error!(
        %panic,
        location = location.as_deref().unwrap_or("unknown"),
        "panic caught in user code"
    );
}
