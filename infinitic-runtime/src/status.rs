//! Status that explains: where an instance stands and what it waits on (calls, timers,
//! children with their own state), so no instance is ever stuck without a reason a user can
//! read.

use crate::store::{StateStore, StoreError, WorkflowState};
use infinitic_core::workflow::Filter;
use infinitic_core::{buffered_signals, outstanding, Command, CommandId, Timestamp, WorkflowId};
use std::collections::BTreeMap;

/// An instance's state and what it waits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// Where it stands.
    pub state: WorkflowState,
    /// Commands it issued that have not completed, oldest first: what it waits on (or a branch
    /// a `select` left behind, until that branch's outcome arrives).
    pub waiting_on: Vec<WaitingOn>,
    /// Signals received and not taken yet, by channel (channels with none are left out).
    pub buffered: BTreeMap<String, usize>,
}

/// One command an instance waits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingOn {
    /// The command (its id is also the task id a service sees, or the child's id).
    pub command: CommandId,
    /// The workflow clock when it was issued.
    pub since: Timestamp,
    /// What it is.
    pub what: Waiting,
}

/// What a waited-on command is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// A call to a service method (it waits while no worker serves it).
    Call {
        /// Service name.
        service: String,
        /// Method name.
        method: String,
    },
    /// A durable timer.
    Timer {
        /// When it fires.
        fire_at: Timestamp,
    },
    /// A signal on a channel (that passes the filter, if any).
    Signal {
        /// The channel.
        channel: String,
        /// Which signals it takes.
        filter: Option<Filter>,
    },
    /// A child workflow.
    Child {
        /// The child's instance id.
        id: WorkflowId,
        /// Its workflow name.
        workflow: String,
        /// Where the child stands (`None` while its start is still in flight): a parked child
        /// says why here.
        state: Option<WorkflowState>,
    },
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiting::Call { service, method } => write!(f, "a call to {service}::{method}"),
            Waiting::Timer { fire_at } => write!(f, "a timer due at {} ms", fire_at.as_millis()),
            Waiting::Signal { channel, filter } => match filter {
                Some(filter) => write!(f, "a signal on `{channel}` where {filter}"),
                None => write!(f, "a signal on `{channel}`"),
            },
            Waiting::Child {
                id,
                workflow,
                state,
            } => match state {
                Some(state) => write!(f, "child {workflow} {id}, {state}"),
                None => write!(f, "child {workflow} {id}, not started yet"),
            },
        }
    }
}

/// The state, then each command waited on with its id and since when (workflow clock):
/// `running; waits on a call to Bank::charge (wf/0/1) since 1767225600000 ms`.
impl std::fmt::Display for Description {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.state)?;
        for (i, waiting) in self.waiting_on.iter().enumerate() {
            let joint = if i == 0 { "; waits on" } else { ";" };
            write!(
                f,
                "{joint} {} ({}) since {} ms",
                waiting.what,
                waiting.command,
                waiting.since.as_millis()
            )?;
        }
        for (channel, count) in &self.buffered {
            write!(f, "; {count} signal(s) buffered on `{channel}`")?;
        }
        Ok(())
    }
}

/// Describes instance `id` from what `store` holds; `None` if there is no such instance.
pub(crate) async fn describe<S: StateStore>(
    store: &S,
    id: &WorkflowId,
) -> Result<Option<Description>, StoreError> {
    let Some(stored) = store.load(id, true).await? else {
        return Ok(None);
    };
    let generation = stored.header.generation;
    let mut waiting_on = Vec::new();
    for open in outstanding(stored.header.started_at, &stored.history) {
        let command = CommandId::new(id.clone(), open.run, open.position).in_generation(generation);
        let what = match open.command {
            Command::CallService {
                service, method, ..
            } => Waiting::Call {
                service: service.into_owned(),
                method: method.into_owned(),
            },
            Command::StartTimer { fire_at } => Waiting::Timer { fire_at },
            // Complete as recorded: `outstanding` never lists one.
            Command::Inline { .. } | Command::SendSignal { .. } => continue,
            Command::Receive {
                channel, filter, ..
            } => Waiting::Signal { channel, filter },
            Command::StartChild { workflow, .. } => {
                let child = WorkflowId::new(command.to_string());
                let state = store.load(&child, false).await?.map(|c| c.state);
                Waiting::Child {
                    id: child,
                    workflow: workflow.into_owned(),
                    state,
                }
            }
        };
        waiting_on.push(WaitingOn {
            command,
            since: open.since,
            what,
        });
    }
    Ok(Some(Description {
        buffered: buffered_signals(&stored.history),
        state: stored.state,
        waiting_on,
    }))
}
