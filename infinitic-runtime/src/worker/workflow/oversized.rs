//! Messages a transport could never carry: checked before the commit that would record them.
//! A transition whose outbox holds one is committed with its history (nothing received is
//! lost) but without the outbox, and the instance parked with the reason: a message that can
//! never be published must not wait in an outbox forever, blocking the relay behind it.

use super::Batch;
use crate::store::{Outgoing, WorkflowState};
use crate::{protocol, topics};
use infinitic_core::{Timestamp, WorkflowId};

/// Parks the instances of `batch` whose transitions would send a message above `limit` bytes
/// (payload and key, as the transport counts them); returns them, to be dropped from the
/// cache (their live state went past what is stored). Clients waiting for them are told of
/// the park, at `now`.
pub(super) fn park_oversized(batch: &mut Batch, limit: usize, now: Timestamp) -> Vec<WorkflowId> {
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
        // Clients waiting for the result are told of the park instead (a short message).
        let clients: Vec<String> = transition
            .outbox
            .iter()
            .filter(|m| m.topic.starts_with(topics::CLIENT_PREFIX))
            .map(|m| m.topic.clone())
            .collect();
        let state = WorkflowState::Parked(reason);
        transition.outbox =
            protocol::responses(&clients, &transition.workflow_id, Some(&state), now);
        transition.state = state;
        parked.push(transition.workflow_id.clone());
    }
    parked
}

fn size(message: &Outgoing) -> usize {
    message.payload.len() + message.key.len()
}
