//! History: the ordered record of what a method run scheduled and what completed.

use crate::{
    Command, CommandRecord, Generation, MethodRun, Payload, Position, StepOutcome, Timestamp,
    WorkflowId,
};
use serde::{Deserialize, Serialize};

/// The completion of one durable command, fed to the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The method run whose command completed.
    pub run: MethodRun,
    /// The command's position within that run.
    pub position: Position,
    /// When the engine applied it: the workflow clock (`workflow::now()`) moves to this.
    pub at: Timestamp,
    /// How the step ended.
    pub outcome: StepOutcome,
}

/// One entry of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryEvent {
    /// The code created this command.
    Scheduled(CommandRecord),
    /// This command completed, and the code ran on until it waited again.
    Completed(Completion),
    /// A signal arrived: taken by a waiting receive or buffered, and the code ran on.
    Signaled(crate::Signal),
}

/// Everything needed to rebuild a method run's state by replaying its code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The instance.
    pub workflow_id: WorkflowId,
    /// Which use of that id the instance is.
    #[serde(default)]
    pub generation: Generation,
    /// Workflow name.
    pub workflow: String,
    /// The method that started the run.
    pub method: String,
    /// Its encoded arguments.
    pub input: Payload,
    /// When it started (the workflow clock before any completion).
    pub started_at: Timestamp,
    /// Scheduled commands and completions, in the order they happened.
    pub events: Vec<HistoryEvent>,
}

impl History {
    /// An empty history for a run that starts now.
    pub fn new(
        workflow_id: WorkflowId,
        workflow: impl Into<String>,
        method: impl Into<String>,
        input: Payload,
        started_at: Timestamp,
    ) -> Self {
        Self {
            workflow_id,
            generation: Generation::FIRST,
            workflow: workflow.into(),
            method: method.into(),
            input,
            started_at,
            events: Vec::new(),
        }
    }

    /// Appends commands the engine produced.
    pub fn record_scheduled(&mut self, commands: &[CommandRecord]) {
        self.events
            .extend(commands.iter().cloned().map(HistoryEvent::Scheduled));
    }

    /// The scheduled commands, in order.
    pub fn scheduled(&self) -> impl Iterator<Item = &CommandRecord> {
        self.events.iter().filter_map(|e| match e {
            HistoryEvent::Scheduled(r) => Some(r),
            _ => None,
        })
    }

    /// The completions, in order.
    pub fn completions(&self) -> impl Iterator<Item = &Completion> {
        self.events.iter().filter_map(|e| match e {
            HistoryEvent::Completed(c) => Some(c),
            _ => None,
        })
    }

    /// The signals received, in order.
    pub fn signals(&self) -> impl Iterator<Item = &crate::Signal> {
        self.events.iter().filter_map(|e| match e {
            HistoryEvent::Signaled(s) => Some(s),
            _ => None,
        })
    }
}

/// A command a run issued and that has not completed yet: what the run waits on (or a branch a
/// `select` left behind, until its outcome arrives), and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// The command's run.
    pub run: MethodRun,
    /// Its position in the run.
    pub position: Position,
    /// What it asks for.
    pub command: Command,
    /// The workflow clock when it was issued.
    pub since: Timestamp,
}

/// The commands of `events` (a history that started at `started_at`) not completed yet, in the
/// order they were issued.
///
/// ```
/// use infinitic_core::{outstanding, Command, CommandRecord, Completion, HistoryEvent};
/// use infinitic_core::{MethodRun, StepOutcome, Timestamp};
/// let timer = |position, ms| HistoryEvent::Scheduled(CommandRecord {
///     position,
///     command: Command::StartTimer { fire_at: Timestamp::from_millis(ms) },
///     location: None,
/// });
/// let events = vec![
///     timer(0, 10),
///     HistoryEvent::Completed(Completion {
///         run: MethodRun(0),
///         position: 0,
///         at: Timestamp::from_millis(10),
///         outcome: StepOutcome::Completed(vec![0xc0]),
///     }),
///     timer(1, 20),
/// ];
/// let waiting = outstanding(Timestamp::from_millis(0), &events);
/// assert_eq!(waiting.len(), 1);
/// assert_eq!((waiting[0].position, waiting[0].since), (1, Timestamp::from_millis(10)));
/// ```
pub fn outstanding(started_at: Timestamp, events: &[HistoryEvent]) -> Vec<Outstanding> {
    let mut now = started_at;
    let mut open: Vec<Outstanding> = Vec::new();
    for event in events {
        match event {
            // Complete as scheduled: nothing to wait on.
            HistoryEvent::Scheduled(record) if record.command.is_settled_at_once() => {}
            HistoryEvent::Scheduled(record) => open.push(Outstanding {
                run: MethodRun(0),
                position: record.position,
                command: record.command.clone(),
                since: now,
            }),
            HistoryEvent::Completed(completion) => {
                now = completion.at;
                open.retain(|o| (o.run, o.position) != (completion.run, completion.position));
            }
            HistoryEvent::Signaled(signal) => {
                now = now.max(signal.at);
                open.retain(|o| Some(o.position) != signal.to);
            }
        }
    }
    open
}

/// How many received signals wait in each channel's buffer at the end of `events`: those
/// buffered on arrival, less those receives took.
pub fn buffered_signals(events: &[HistoryEvent]) -> std::collections::BTreeMap<String, usize> {
    let mut buffered = std::collections::BTreeMap::<String, usize>::new();
    for event in events {
        match event {
            HistoryEvent::Signaled(signal) if signal.to.is_none() => {
                *buffered.entry(signal.channel.clone()).or_default() += 1;
            }
            HistoryEvent::Scheduled(CommandRecord {
                command: Command::Receive { channel, took, .. },
                ..
            }) => {
                if let Some(count) = buffered.get_mut(channel) {
                    *count = count.saturating_sub(took.len());
                }
            }
            _ => {}
        }
    }
    buffered.retain(|_, count| *count > 0);
    buffered
}
