//! Cold replay: rebuild a live instance from its history, checking every command the code
//! produces against the one recorded at its position.

use crate::engine::{Applied, Mismatch, ParkReason, Progress, Start, Status};
use crate::History;
use crate::{
    Command, CommandRecord, DispatchError, HistoryEvent, Limits, MethodRun, WorkflowDefinition,
    WorkflowInstance,
};
use std::collections::VecDeque;

/// The result of replaying a history.
#[derive(Debug)]
pub struct Replay {
    /// The live instance, ready for the next completion (finished if completed or parked).
    pub instance: WorkflowInstance,
    /// Commands the code produced beyond the end of history: record and dispatch them.
    pub new_commands: Vec<CommandRecord>,
    /// Where the run stands.
    pub status: Status,
}

/// Replays `history` with the workflow's current code.
///
/// Pure: the same code and history always give the same result. A command that differs from
/// history parks the run with [`ParkReason::Nondeterminism`], naming the position, both
/// commands and the source line; the history itself is never modified.
pub fn replay(
    definition: &dyn WorkflowDefinition,
    history: &History,
) -> Result<Replay, DispatchError> {
    replay_with_limits(definition, history, Limits::default())
}

/// [`replay`] under `limits`: give it the limits the run was recorded with, as they decide
/// which steps' arguments were refused (see [`WorkflowInstance::start_with_limits`]).
pub fn replay_with_limits(
    definition: &dyn WorkflowDefinition,
    history: &History,
    limits: Limits,
) -> Result<Replay, DispatchError> {
    // Inline steps return what history recorded instead of running again.
    let recorded = history
        .scheduled()
        .filter_map(|record| match &record.command {
            Command::Inline { value } => Some((record.position, value.clone())),
            _ => None,
        })
        .collect();
    let (mut instance, first) = WorkflowInstance::start_recorded(
        definition,
        Start {
            workflow_id: history.workflow_id.clone(),
            generation: history.generation,
            run: MethodRun(0),
            method: &history.method,
            input: &history.input,
            at: history.started_at,
        },
        limits,
        recorded,
    )?;
    let mut produced: VecDeque<CommandRecord> = first.commands.into();
    let mut status = first.status;

    for event in &history.events {
        let mismatch = match event {
            HistoryEvent::Scheduled(recorded) => match produced.pop_front() {
                Some(found) if found.command.matches(&recorded.command) => None,
                found => Some(mismatch_at(
                    recorded.position,
                    Some(recorded),
                    found.as_ref(),
                )),
            },
            HistoryEvent::Completed(completion) => match produced.front() {
                // History ran on to a completion, but the code produced more commands first;
                // report what history recorded at that position, if anything (later).
                Some(extra) => {
                    let recorded = history.scheduled().find(|r| r.position == extra.position);
                    Some(mismatch_at(extra.position, recorded, Some(extra)))
                }
                None if instance.is_finished() => None,
                None => match instance.apply(completion.clone()) {
                    Ok(Applied::Progressed(Progress {
                        commands,
                        status: s,
                    })) => {
                        produced.extend(commands);
                        status = s;
                        None
                    }
                    Ok(Applied::Ignored(_)) => None,
                    // The code never created the command this outcome is for.
                    Err(_) => Some(Mismatch {
                        position: completion.position,
                        expected: None,
                        found: None,
                        location: None,
                    }),
                },
            },
            HistoryEvent::Signaled(signal) => match produced.front() {
                Some(extra) => {
                    let recorded = history.scheduled().find(|r| r.position == extra.position);
                    Some(mismatch_at(extra.position, recorded, Some(extra)))
                }
                None if instance.is_finished() => None,
                None => match instance.receive_signal(signal) {
                    Ok(Progress {
                        commands,
                        status: s,
                    }) => {
                        produced.extend(commands);
                        status = s;
                        None
                    }
                    // History gave the signal to a receive the code no longer waits on.
                    Err(()) => Some(Mismatch {
                        position: signal.to.unwrap_or_default(),
                        expected: history
                            .scheduled()
                            .find(|r| Some(r.position) == signal.to)
                            .map(|r| r.command.signature()),
                        found: None,
                        location: None,
                    }),
                },
            },
        };
        if let Some(mismatch) = mismatch {
            instance.park();
            return Ok(Replay {
                instance,
                new_commands: Vec::new(),
                status: Status::Parked(ParkReason::Nondeterminism(Box::new(mismatch))),
            });
        }
    }
    Ok(Replay {
        instance,
        new_commands: produced.into(),
        status,
    })
}

fn mismatch_at(
    position: u32,
    expected: Option<&CommandRecord>,
    found: Option<&CommandRecord>,
) -> Mismatch {
    Mismatch {
        position: found.map_or(position, |f| f.position),
        expected: expected.map(|r| r.command.signature()),
        found: found.map(|r| r.command.signature()),
        location: found
            .and_then(|r| r.location)
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
    }
}
