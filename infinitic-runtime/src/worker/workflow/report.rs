//! A client asks an instance to report how it ended to the client's response topic (a handle
//! waiting over a broker, or a second start of the same id): answered at once if the instance
//! has ended, else the topic is stored with the instance, by a transition, and told when it
//! ends.

use super::instances::{Effect, Instances};
use super::not_applied::NotApplied;
use crate::protocol;
use crate::store::{Consumed, StateStore, Transition, WorkflowState};
use infinitic_core::message::MessageId;
use infinitic_core::WorkflowId;

impl Instances {
    /// Makes instance `id` report to `reply_to`. The consumed message is recorded under an id
    /// naming the instance and the topic, so asking again (a redelivery, a start sent again)
    /// changes nothing, whatever message asked.
    pub(super) async fn watch<S: StateStore>(
        &mut self,
        store: &S,
        consumed: Consumed,
        id: &WorkflowId,
        reply_to: String,
    ) -> Result<Effect, NotApplied> {
        let consumed = Consumed {
            message: MessageId::new(format!("wait:{id}:{reply_to}")),
            delivery: consumed.delivery,
        };
        let at = self.clock.now();
        if let Some(mut live) = self.cache.take(id) {
            // Live instances are running: remember the topic with the next version.
            if live.report_to.contains(&reply_to) {
                self.cache.put_back(id.clone(), live);
                return Ok(Effect::Ack);
            }
            live.report_to.push(reply_to);
            let transition = watching(id, live.version, live.report_to.clone(), consumed);
            live.version += 1;
            self.cache.put_back(id.clone(), live);
            return Ok(Effect::transition(transition));
        }
        let Some(stored) = store
            .load(id, false)
            .await
            .map_err(|e| NotApplied::store(id, e))?
        else {
            let answer = protocol::responses(&[reply_to], id, None, at);
            return Ok(Effect::Reply(answer));
        };
        match stored.state {
            state if state.is_final() => {
                let answer = protocol::responses(&[reply_to], id, Some(&state), at);
                Ok(Effect::Reply(answer))
            }
            // Its start message carries the topics it reports to: wait for it to start.
            WorkflowState::Pending => Err(NotApplied::Later {
                reason: format!("a client waits for {id}, which has not started yet"),
                park: None,
            }),
            _ if stored.report_to.contains(&reply_to) => Ok(Effect::Ack),
            _ => {
                let mut report_to = stored.report_to;
                report_to.push(reply_to);
                Ok(Effect::transition(watching(
                    id,
                    stored.version,
                    report_to,
                    consumed,
                )))
            }
        }
    }
}

/// Running instance `id` at `version` now reports to `report_to`; nothing else changes.
fn watching(
    id: &WorkflowId,
    version: u64,
    report_to: Vec<String>,
    consumed: Consumed,
) -> Transition {
    let mut transition = protocol::step(
        id,
        version,
        None,
        WorkflowState::Running,
        Vec::new(),
        Vec::new(),
        consumed,
    );
    transition.report_to = Some(report_to);
    transition
}
