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
            HistoryEvent::Completed(_) => None,
        })
    }

    /// The completions, in order.
    pub fn completions(&self) -> impl Iterator<Item = &Completion> {
        self.events.iter().filter_map(|e| match e {
            HistoryEvent::Completed(c) => Some(c),
            HistoryEvent::Scheduled(_) => None,
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
        }
    }
    open
}
