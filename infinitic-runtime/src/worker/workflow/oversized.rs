//! Messages a transport could never carry: checked before the commit that would record them.
//! A transition whose outbox holds one is committed with its history (nothing received is
//! lost) but without the outbox, and the instance parked with the reason: a message that can
//! never be published must not wait in an outbox forever, blocking the relay behind it.

use super::Batch;
use crate::store::{Outgoing, WorkflowState};
use infinitic_core::WorkflowId;

/// Parks the instances of `batch` whose transitions would send a message above `limit` bytes
/// (payload and key, as the transport counts them); returns them, to be dropped from the
/// cache (their live state went past what is stored).
pub(super) fn park_oversized(batch: &mut Batch, limit: usize) -> Vec<WorkflowId> {
    let mut parked = Vec::new();
    for transition in &mut batch.transitions {
        let Some(message) = transition.outbox.iter().find(|m| size(m) > limit) else {
            continue;
        };
        let reason = format!(
            "a message of {} bytes for {} is over the transport's limit of {limit} bytes; \
             nothing of this step was sent",
            size(message),
            message.topic
        );
        tracing::warn!(%reason, workflow = %transition.workflow_id, "workflow parked");
        transition.outbox.clear();
        transition.state = WorkflowState::Parked(reason);
        parked.push(transition.workflow_id.clone());
    }
    parked
}

fn size(message: &Outgoing) -> usize {
    message.payload.len() + message.key.len()
}
