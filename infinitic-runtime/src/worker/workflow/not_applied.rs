//! Events that cannot be applied now: held (delivered again later, never dead-lettered) or
//! refused for good (dead-lettered with a reason).

use crate::protocol;
use crate::store::{StoreError, Transition, WorkflowState};
use crate::worker::warn_throttled;
use infinitic_core::{Limits, StepOutcome, WorkflowId};

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
