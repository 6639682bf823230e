//! A signal message: delivered to its instance (to a waiting receive or the channel's
//! buffer) by the transition that consumes it, kept with a parked instance, or refused with
//! the reason.

use super::instances::{scheduled, Effect, Instances};
use super::not_applied::NotApplied;
use super::parked::Parked;
use super::rebuild::Rebuilt;
use crate::store::{Consumed, StateStore, WorkflowState};
use infinitic_core::{HistoryEvent, Signal, Signaled, WorkflowId};

impl Instances {
    /// Delivers a signal to instance `id`: taken by a waiting receive or buffered, in the
    /// transition that consumes its message. A signal for an instance that does not exist or
    /// has ended, for a channel the workflow lacks, or for a full channel is refused for good
    /// (dead-lettered with the reason); one for a parked instance is stored with it.
    pub(super) async fn signal<S: StateStore>(
        &mut self,
        store: &S,
        consumed: Consumed,
        id: &WorkflowId,
        signal: IncomingSignal,
    ) -> Result<Effect, NotApplied> {
        let IncomingSignal {
            id: signal_id,
            channel,
            value,
        } = signal;
        let at = self.clock.now();
        let (mut live, recovered) = match self.cache.take(id) {
            Some(live) => (live, Vec::new()),
            None => {
                let stored = store
                    .load(id, true)
                    .await
                    .map_err(|e| NotApplied::store(id, e))?
                    .ok_or_else(|| {
                        NotApplied::Never(format!(
                            "signal on `{channel}` for unknown workflow instance {id}"
                        ))
                    })?;
                match &stored.state {
                    WorkflowState::Running | WorkflowState::Parked(_) => {}
                    // Its start is still on its way (it comes first on an ordered transport).
                    WorkflowState::Pending => {
                        return Err(NotApplied::Later {
                            reason: format!("signal for {id}, which has not started yet"),
                            park: None,
                        })
                    }
                    ended => {
                        return Err(NotApplied::Never(format!(
                            "signal on `{channel}` for workflow instance {id}, which has ended: \
                             {ended}"
                        )))
                    }
                }
                match self.rebuild(stored)? {
                    Rebuilt::Live(live, new_commands) => (*live, new_commands),
                    Rebuilt::Done(effect) => return Ok(effect),
                    Rebuilt::Parked(parked) => {
                        let signal = Signal {
                            id: signal_id,
                            channel,
                            value,
                            at,
                            to: None,
                        };
                        return Ok(keep_signal_for_parked(parked, consumed, id, signal));
                    }
                }
            }
        };
        let capacity = self
            .definitions
            .get(&live.workflow)
            .and_then(|definition| definition.channel_capacity(&channel));
        let Some(capacity) = capacity else {
            let reason = format!("workflow {} has no channel `{channel}`", live.workflow);
            self.cache.put_back(id.clone(), live);
            return Err(NotApplied::Never(reason));
        };
        let channel_name = channel.clone();
        match live
            .instance
            .signal(signal_id, channel, value, at, capacity)
        {
            Signaled::Received { signal, progress } => {
                let mut append = scheduled(&recovered);
                append.push(HistoryEvent::Signaled(signal));
                append.extend(scheduled(&progress.commands));
                let mut commands = recovered;
                commands.extend(progress.commands);
                let transition = live.transition(
                    id,
                    None,
                    append,
                    &commands,
                    &progress.status,
                    (consumed, at),
                );
                tracing::debug!(channel = channel_name, "signal received");
                self.cache.keep(id.clone(), live, &progress.status);
                Ok(Effect::transition(self.run_tasks_here(transition)))
            }
            Signaled::Duplicate => {
                self.cache.put_back(id.clone(), live);
                Ok(Effect::Ack)
            }
            Signaled::Full { capacity } => {
                self.cache.put_back(id.clone(), live);
                Err(NotApplied::Never(format!(
                    "channel `{channel_name}` of {id} is full ({capacity} signals buffered): \
                     signal dropped"
                )))
            }
            Signaled::RunEnded => Err(NotApplied::Never(format!(
                "signal for workflow instance {id}, which has ended"
            ))),
        }
    }
}

/// A signal as its message carries it.
pub(super) struct IncomingSignal {
    pub(super) id: String,
    pub(super) channel: String,
    pub(super) value: infinitic_core::Payload,
}

/// A signal for a parked instance: stored with it (buffered; see [`Parked::keep`]).
fn keep_signal_for_parked(
    parked: Parked,
    consumed: Consumed,
    id: &WorkflowId,
    signal: Signal,
) -> Effect {
    let signal_id = signal.id.clone();
    let same =
        |event: &HistoryEvent| matches!(event, HistoryEvent::Signaled(s) if s.id == signal_id);
    parked.keep(id, HistoryEvent::Signaled(signal), same, consumed)
}
