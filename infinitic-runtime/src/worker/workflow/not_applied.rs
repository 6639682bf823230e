//! Events that cannot be applied now: held (delivered again later, never dead-lettered) or
//! refused for good (dead-lettered with a reason), and events that come early.

use super::HOLD_BASE;
use crate::protocol;
use crate::store::{Delivery, Settlement, StoreError, Transition, WorkflowState};
use crate::worker::backoff;
use crate::worker::warn_throttled;
use infinitic_core::message::Message;
use infinitic_core::{Limits, StepOutcome, Timestamp, WorkflowId};
use std::time::Duration;

/// Why an event could not be applied now.
pub(super) enum NotApplied {
    /// Not now (the store is unavailable or the instance cannot be rebuilt): delivered again later, never
    /// dead-lettered; `park` records why the instance cannot go on, where it can be recorded.
    Later {
        reason: String,
        park: Option<Box<Transition>>,
    },
    /// It can never be applied: dead-lettered with this reason.
    Never(String),
}

impl NotApplied {
    /// A store failure while handling an event of `id`: the event waits, whatever the
    /// failure; an instance whose stored form cannot be decoded is parked with the reason
    /// (its status shows it) unless it already is.
    pub(super) fn store(id: &WorkflowId, error: StoreError) -> Self {
        let reason = format!("cannot load workflow {id}: {error}");
        let park = match &error {
            StoreError::Undecodable {
                version: Some(version),
                state,
                ..
            } if !matches!(state, Some(WorkflowState::Parked(_))) => {
                // Its response topics cannot be read either: a waiting client sees the park
                // in the instance's status.
                let never = infinitic_core::Timestamp::from_millis(0);
                Some(Box::new(protocol::park(
                    id,
                    *version,
                    &error.to_string(),
                    &[],
                    never,
                )))
            }
            _ => None,
        };
        NotApplied::Later { reason, park }
    }
}

/// The settlement of a completion that came before its time (stamped `at` later than `now`
/// by the worker's clock): a timer whose broker reads a clock running ahead of the reference
/// (or a completion from a host whose clock does). Held until `at`, so no timer fires early by
/// the reference clock; when delivered early again, also a growing backoff later, so a
/// broker that keeps delivering it early is not asked again in a tight loop. `None`: not
/// early.
pub(super) fn held_early(
    message: Option<&Message>,
    delivery: &Delivery,
    now: Timestamp,
) -> Option<Settlement> {
    let Some(Message::CommandCompleted { at, .. }) = message else {
        return None;
    };
    if *at <= now {
        return None;
    }
    tracing::debug!(
        early_ms = at.saturating_duration_since(now).as_millis() as u64,
        "an event came before its time: held"
    );
    // The first time, at its own time: a completion stamped by a host whose clock runs a few
    // milliseconds ahead waits that long, not a hold period. Delivered early again, the
    // transport reads a clock ahead too: back off, not to ask it again in a tight loop.
    let wait = match delivery.attempt {
        0 | 1 => Duration::from_millis(1),
        attempt => backoff(HOLD_BASE, attempt - 1),
    };
    Some(Settlement::Retry {
        delivery: delivery.id,
        at: (*at).max(now + wait),
    })
}

/// Logs, at most once per interval for each kind, that an event of `id` waits.
pub(super) fn warn_later(id: &WorkflowId, reason: &str) {
    let kind = match reason.split_once(':') {
        Some((_, rest)) => rest.trim().chars().take(40).collect::<String>(),
        None => reason.chars().take(40).collect(),
    };
    warn_throttled(&format!("held: {kind}"), || {
        format!("an event of {id} waits: {reason}")
    });
}

/// Why a received outcome's payload (a result, a service's error) is refused, if it is.
pub(super) fn refuse(outcome: &StepOutcome, limits: &Limits) -> Option<String> {
    let (what, payload) = match outcome {
        StepOutcome::Completed(value) => ("result", value),
        StepOutcome::Failed { error, .. } => ("error", error),
        _ => return None,
    };
    let error = limits.check(payload).err()?;
    Some(format!("the step's {what} is refused: {error}"))
}
