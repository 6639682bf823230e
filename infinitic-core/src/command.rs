//! Commands: what workflow code asks the world to do at each durable `.await`.

use crate::{Payload, Position, Timestamp};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::panic::Location;

/// A durable operation requested by workflow code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Call a service method; completed by the method's outcome.
    CallService {
        /// Service name (trait name unless renamed).
        service: Cow<'static, str>,
        /// Method name.
        method: Cow<'static, str>,
        /// Encoded argument tuple.
        args: Payload,
    },
    /// A durable timer; completed when it fires.
    StartTimer {
        /// When the timer fires.
        fire_at: Timestamp,
    },
    /// Run a child workflow's method; completed by its result.
    StartChild {
        /// Workflow name.
        workflow: Cow<'static, str>,
        /// Method name.
        method: Cow<'static, str>,
        /// Encoded argument tuple.
        args: Payload,
    },
    /// A value computed by workflow code once (`workflow::inline`) and recorded: complete as
    /// soon as it is scheduled, returned from history on replay.
    Inline {
        /// The encoded value.
        value: Payload,
    },
    /// Receive signals on a channel: complete at once when `took` names the buffered signals
    /// it took (by their sequence numbers), else when a signal arrives for it.
    Receive {
        /// The channel.
        channel: String,
        /// Which signals it takes.
        filter: Option<crate::filter::Filter>,
        /// How many it takes at most.
        max: u32,
        /// The buffered signals it took when it was created (empty: it waited).
        took: Vec<u64>,
    },
    /// Send a signal to a channel of another instance (complete once sent).
    SendSignal {
        /// The target's workflow name.
        workflow: String,
        /// The target instance.
        instance: String,
        /// The channel.
        channel: String,
        /// The encoded value.
        value: Payload,
    },
}

impl Command {
    /// True for a command that completes when it is scheduled ([`Command::Inline`]): nothing
    /// is sent for it and nothing waits on it.
    pub fn is_settled_at_once(&self) -> bool {
        match self {
            Command::Inline { .. } | Command::SendSignal { .. } => true,
            Command::Receive { took, .. } => !took.is_empty(),
            _ => false,
        }
    }

    /// What replay compares: the kind and the target, not the arguments (so fixing how an
    /// argument is computed does not break running instances).
    pub fn signature(&self) -> CommandSignature {
        match self {
            Command::CallService {
                service, method, ..
            } => CommandSignature::CallService {
                service: service.to_string(),
                method: method.to_string(),
            },
            Command::StartTimer { .. } => CommandSignature::StartTimer,
            Command::StartChild {
                workflow, method, ..
            } => CommandSignature::StartChild {
                workflow: workflow.to_string(),
                method: method.to_string(),
            },
            Command::Inline { .. } => CommandSignature::Inline,
            Command::Receive { channel, .. } => CommandSignature::Receive {
                channel: channel.clone(),
            },
            Command::SendSignal {
                workflow, channel, ..
            } => CommandSignature::SendSignal {
                workflow: workflow.clone(),
                channel: channel.clone(),
            },
        }
    }

    /// True when replay accepts `other` in place of `self`.
    pub fn matches(&self, other: &Command) -> bool {
        match (self, other) {
            (
                Command::CallService {
                    service: s1,
                    method: m1,
                    ..
                },
                Command::CallService {
                    service: s2,
                    method: m2,
                    ..
                },
            ) => s1 == s2 && m1 == m2,
            (Command::StartTimer { .. }, Command::StartTimer { .. }) => true,
            (
                Command::StartChild {
                    workflow: w1,
                    method: m1,
                    ..
                },
                Command::StartChild {
                    workflow: w2,
                    method: m2,
                    ..
                },
            ) => w1 == w2 && m1 == m2,
            (Command::Inline { .. }, Command::Inline { .. }) => true,
            // What a receive took is part of it: a replay that takes other signals diverges.
            (
                Command::Receive {
                    channel: c1,
                    filter: f1,
                    max: m1,
                    took: t1,
                },
                Command::Receive {
                    channel: c2,
                    filter: f2,
                    max: m2,
                    took: t2,
                },
            ) => c1 == c2 && f1 == f2 && m1 == m2 && t1 == t2,
            (
                Command::SendSignal {
                    workflow: w1,
                    channel: c1,
                    ..
                },
                Command::SendSignal {
                    workflow: w2,
                    channel: c2,
                    ..
                },
            ) => w1 == w2 && c1 == c2,
            _ => false,
        }
    }
}

/// The comparable part of a [`Command`], shown in non-determinism reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandSignature {
    /// A call to `service::method`.
    CallService {
        /// Service name.
        service: String,
        /// Method name.
        method: String,
    },
    /// A durable timer.
    StartTimer,
    /// A child workflow `workflow::method`.
    StartChild {
        /// Workflow name.
        workflow: String,
        /// Method name.
        method: String,
    },
    /// An inline step (`workflow::inline`).
    Inline,
    /// A receive on a channel.
    Receive {
        /// The channel.
        channel: String,
    },
    /// A signal sent to another workflow's channel.
    SendSignal {
        /// The target workflow.
        workflow: String,
        /// The channel.
        channel: String,
    },
}

impl fmt::Display for CommandSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandSignature::CallService { service, method } => {
                write!(f, "call {service}::{method}")
            }
            CommandSignature::StartTimer => f.write_str("timer"),
            CommandSignature::StartChild { workflow, method } => {
                write!(f, "child workflow {workflow}::{method}")
            }
            CommandSignature::Inline => f.write_str("inline step"),
            CommandSignature::Receive { channel } => write!(f, "receive on `{channel}`"),
            CommandSignature::SendSignal { workflow, channel } => {
                write!(f, "signal to {workflow}::{channel}")
            }
        }
    }
}

/// A command with its position; what history records and what the engine emits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommandRecord {
    /// Position within the method run.
    pub position: Position,
    /// The command.
    pub command: Command,
    /// Where in the workflow's source the command was created (not persisted).
    #[serde(skip)]
    pub location: Option<&'static Location<'static>>,
}

impl PartialEq for CommandRecord {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position && self.command == other.command
    }
}

impl Eq for CommandRecord {}
