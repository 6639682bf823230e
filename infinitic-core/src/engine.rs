//! The sticky engine: one live workflow instance, fed one completion at a time.
//!
//! Each [`WorkflowInstance::apply`] delivers an outcome and polls the instance's future until
//! it waits again: O(1) per step, whatever the history's length. A cold start ([`crate::replay`])
//! drives the same instance through the same calls, so both paths produce identical commands.

use crate::context::{enter, EngineState};
use crate::limits::scoped;
use crate::panic::{catch_quietly, panic_message};
use crate::{
    CommandRecord, Completion, DispatchError, Generation, Limits, MethodRun, Payload, Position,
    Timestamp, WorkflowDefinition, WorkflowFuture, WorkflowId,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Where a method run stands after a poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for completions of its pending commands.
    Running,
    /// Returned this encoded value.
    Completed(Payload),
    /// Stopped safely and needs a person: fix the code or data, then retry from history.
    Parked(ParkReason),
}

/// Why a run was parked. The history is intact; nothing was applied half-way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ParkReason {
    /// Replaying the code against its history produced different commands.
    #[error("{0}")]
    /// (Boxed: it is rare and large, and `Status` is moved on every step.)
    Nondeterminism(Box<Mismatch>),
    /// The workflow code panicked.
    #[error("the workflow panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The code is waiting on something that is not a durable operation (a channel, a tokio
    /// timer, ...) and no durable operation is pending: it would wait forever.
    #[error(
        "the workflow awaits something that is not durable (no durable step is pending); \
         use service stubs, workflow::sleep and workflow::select instead"
    )]
    NonDurableAwait,
    /// The future was woken by something other than the engine: workflow code awaited a
    /// non-durable source, which replay could not reproduce.
    #[error(
        "the workflow was woken by something other than the engine (a non-durable future); \
         use service stubs and workflow::sleep instead"
    )]
    ForeignWake,
    /// The return value could not be encoded.
    #[error("the workflow's result cannot be encoded: {reason}")]
    BadResult {
        /// The encoder's message.
        reason: String,
    },
}

/// A replayed command differs from the one recorded in history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "non-deterministic workflow at position {position}: {}{}",
    describe_change(expected, found),
    location.as_ref().map(|l| format!(" (at {l})")).unwrap_or_default()
)]
pub struct Mismatch {
    /// Position of the first differing command.
    pub position: Position,
    /// What history recorded there (`None`: nothing).
    pub expected: Option<crate::CommandSignature>,
    /// What the code produced there (`None`: nothing).
    pub found: Option<crate::CommandSignature>,
    /// Source location (`file:line:column`) of the code that produced `found`.
    pub location: Option<String>,
}

fn describe(signature: &Option<crate::CommandSignature>) -> String {
    signature
        .as_ref()
        .map_or_else(|| "no command".to_string(), |s| s.to_string())
}

fn describe_change(
    expected: &Option<crate::CommandSignature>,
    found: &Option<crate::CommandSignature>,
) -> String {
    match (expected, found) {
        // The same command, but created before a completion that history shows it waited for.
        (Some(recorded), Some(found)) if recorded == found => format!(
            "history recorded {found} only after a completion, the code now produces it before"
        ),
        _ => format!(
            "history has {}, the code now produces {}",
            describe(expected),
            describe(found)
        ),
    }
}

/// What one poll produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// New commands, in position order, to record and dispatch.
    pub commands: Vec<CommandRecord>,
    /// Where the run stands now.
    pub status: Status,
}

/// What [`WorkflowInstance::apply`] did with a completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The completion was delivered and the code ran on.
    Progressed(Progress),
    /// A duplicate, a late outcome of an abandoned command, or an outcome after the run
    /// ended: safely ignored (record nothing).
    Ignored(IgnoredReason),
}

/// What [`WorkflowInstance::signal`] did with a signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signaled {
    /// Received: taken by a waiting receive or buffered (`signal.to` says which), and the code
    /// ran on. Record `signal` in history.
    Received {
        /// The signal as history records it.
        signal: crate::Signal,
        /// What the code did next.
        progress: Progress,
    },
    /// A signal with this id was received before: nothing changes, nothing to record.
    Duplicate,
    /// No waiting receive takes it and the channel already buffers `capacity` signals: not
    /// received (nothing to record).
    Full {
        /// The channel's capacity.
        capacity: usize,
    },
    /// The run has ended.
    RunEnded,
}

/// Why a completion was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoredReason {
    /// This command's outcome was already applied, or its future was dropped (select loser).
    AlreadySettled,
    /// The run already completed or was parked.
    RunEnded,
}

/// A completion that cannot belong to this run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RejectedEvent {
    /// No command was created at this position.
    #[error("no command at position {position} (the run has created {created})")]
    UnknownCommand {
        /// The position in the event.
        position: Position,
        /// How many commands the run has created.
        created: Position,
    },
    /// The event is for another method run.
    #[error("event for method run {found}, this instance is run {expected}")]
    WrongRun {
        /// This instance's run.
        expected: MethodRun,
        /// The event's run.
        found: MethodRun,
    },
}

/// Everything needed to start a method run.
#[derive(Clone, Debug)]
pub struct Start<'a> {
    /// The instance's id (seeds deterministic randomness, part of every command id).
    pub workflow_id: WorkflowId,
    /// Which use of that id the instance is ([`Generation::FIRST`] but for reused ids).
    pub generation: Generation,
    /// The method run.
    pub run: MethodRun,
    /// Method to run.
    pub method: &'a str,
    /// Encoded arguments.
    pub input: &'a [u8],
    /// The workflow clock at start.
    pub at: Timestamp,
}

/// A live method run: its future and engine state.
pub struct WorkflowInstance {
    future: Option<WorkflowFuture>,
    state: Option<Box<EngineState>>,
    woken: Arc<WakeFlag>,
    waker: Waker,
}

impl std::fmt::Debug for WorkflowInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowInstance")
            .field("state", &self.state)
            .field("finished", &self.future.is_none())
            .finish()
    }
}

/// Set when anything wakes the instance's waker: durable futures never do.
#[derive(Debug, Default)]
struct WakeFlag(AtomicBool);

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl WorkflowInstance {
    /// Starts a method run with the default [`Limits`] and polls it until it first waits.
    pub fn start(
        definition: &dyn WorkflowDefinition,
        start: Start<'_>,
    ) -> Result<(Self, Progress), DispatchError> {
        Self::start_with_limits(definition, start, Limits::default())
    }

    /// Starts a method run and polls it until it first waits. Its input is checked against
    /// `limits` before it is decoded ([`DispatchError::BadArguments`] naming the limit), and
    /// whatever the run encodes (step arguments, its output) must stay within them: a step
    /// whose arguments do not resolves to `StepError::Invalid`, an output that does not parks
    /// the run with [`ParkReason::BadResult`].
    ///
    /// ```
    /// use infinitic_core::{DispatchError, Generation, Limits, MethodRun, Start, Timestamp};
    /// use infinitic_core::{WorkflowDefinition, WorkflowFuture, WorkflowId, WorkflowInstance};
    /// struct Any;
    /// impl WorkflowDefinition for Any {
    ///     fn name(&self) -> &str { "Any" }
    ///     fn start(&self, _: &str, _: &[u8]) -> Result<WorkflowFuture, DispatchError> {
    ///         Ok(Box::pin(async { Ok(vec![0xc0]) }))
    ///     }
    /// }
    /// let start = Start {
    ///     workflow_id: WorkflowId::new("wf"),
    ///     generation: Generation::FIRST,
    ///     run: MethodRun(0),
    ///     method: "run",
    ///     input: &[0x91; 1000], // 1000 nested arrays
    ///     at: Timestamp::from_millis(0),
    /// };
    /// let refused = WorkflowInstance::start_with_limits(&Any, start, Limits::default());
    /// assert!(refused.unwrap_err().to_string().contains("depth limit of 128"));
    /// ```
    pub fn start_with_limits(
        definition: &dyn WorkflowDefinition,
        start: Start<'_>,
        limits: Limits,
    ) -> Result<(Self, Progress), DispatchError> {
        Self::start_recorded(definition, start, limits, Vec::new())
    }

    /// [`Self::start_with_limits`] for a replay: `recorded` holds the values of the inline
    /// steps of the history being replayed, by position.
    pub(crate) fn start_recorded(
        definition: &dyn WorkflowDefinition,
        start: Start<'_>,
        limits: Limits,
        recorded: Vec<(Position, Payload)>,
    ) -> Result<(Self, Progress), DispatchError> {
        limits
            .check(start.input)
            .map_err(|e| DispatchError::BadArguments {
                target: definition.name().to_string(),
                method: start.method.to_string(),
                reason: e.to_string(),
            })?;
        let future = definition.start(start.method, start.input)?;
        let woken = Arc::new(WakeFlag::default());
        let mut state = Box::new(EngineState::new(
            (start.workflow_id, start.generation),
            start.run,
            start.at,
            limits,
        ));
        if !recorded.is_empty() {
            state.extra().recorded = recorded;
        }
        let mut instance = Self {
            future: Some(future),
            state: Some(state),
            waker: Waker::from(Arc::clone(&woken)),
            woken,
        };
        let progress = instance.poll();
        Ok((instance, progress))
    }

    /// Delivers one completion and runs the code until it waits again.
    pub fn apply(&mut self, completion: Completion) -> Result<Applied, RejectedEvent> {
        let state = self.state.as_mut().expect("state is present between polls");
        if completion.run != state.run {
            return Err(RejectedEvent::WrongRun {
                expected: state.run,
                found: completion.run,
            });
        }
        if completion.position >= state.next_position {
            return Err(RejectedEvent::UnknownCommand {
                position: completion.position,
                created: state.next_position,
            });
        }
        if self.future.is_none() {
            return Ok(Applied::Ignored(IgnoredReason::RunEnded));
        }
        if !state.settle(completion.position) {
            return Ok(Applied::Ignored(IgnoredReason::AlreadySettled));
        }
        state.now = state.now.max(completion.at);
        state.deliver(completion.position, completion.outcome);
        Ok(Applied::Progressed(self.poll()))
    }

    /// Delivers a signal sent to `channel` (its sender's `id`, its encoded `value`, received at
    /// `at`): to the oldest waiting receive of that channel that accepts it, else to the
    /// channel's buffer if it holds fewer than `capacity` signals; then runs the code until it
    /// waits again.
    pub fn signal(
        &mut self,
        id: String,
        channel: String,
        value: Payload,
        at: Timestamp,
        capacity: usize,
    ) -> Signaled {
        if self.future.is_none() {
            return Signaled::RunEnded;
        }
        let state = self.state.as_mut().expect("state is present between polls");
        let limits = state.limits;
        let extra = state.extra();
        if extra.signal_ids.contains(&id) {
            return Signaled::Duplicate;
        }
        let to = scoped(limits, || {
            extra
                .receivers
                .iter()
                .find(|r| r.channel == channel && (r.matcher)(&value))
                .map(|r| r.position)
        });
        let buffered = extra.buffered.iter().filter(|b| b.channel == channel);
        if to.is_none() && buffered.count() >= capacity {
            return Signaled::Full { capacity };
        }
        let signal = crate::Signal {
            id,
            channel,
            value,
            at,
            to,
        };
        let progress = self
            .receive_signal(&signal)
            .expect("the receive was found waiting just now");
        Signaled::Received { signal, progress }
    }

    /// Applies a signal as history records it (live, or in a replay): to the receive at
    /// `signal.to`, or to the buffer. `Err` when `to` names no receive waiting on that channel:
    /// the code no longer matches its history.
    pub(crate) fn receive_signal(&mut self, signal: &crate::Signal) -> Result<Progress, ()> {
        let state = self.state.as_mut().expect("state is present between polls");
        let extra = state.extra();
        if let Some(position) = signal.to {
            let index = extra
                .receivers
                .iter()
                .position(|r| r.position == position && r.channel == signal.channel)
                .ok_or(())?;
            extra.receivers.remove(index);
            state.settle(position);
            state.deliver(
                position,
                crate::StepOutcome::Completed(signal.value.clone()),
            );
        } else {
            let seq = extra.signals;
            extra.buffered.push(crate::signal::Buffered {
                seq,
                channel: signal.channel.clone(),
                value: signal.value.clone(),
            });
        }
        let extra = state.extra();
        extra.signals += 1;
        extra.signal_ids.insert(signal.id.clone());
        state.now = state.now.max(signal.at);
        Ok(self.poll())
    }

    /// Whether the run has ended (completed or parked).
    pub fn is_finished(&self) -> bool {
        self.future.is_none()
    }

    /// The instance's id.
    pub fn workflow_id(&self) -> &WorkflowId {
        &self.state().workflow_id
    }

    /// The workflow clock.
    pub fn now(&self) -> Timestamp {
        self.state().now
    }

    /// Positions of commands that are waiting for an outcome.
    pub fn pending(&self) -> impl Iterator<Item = Position> + '_ {
        self.state().pending.iter().copied()
    }

    /// Ends the run because replay found a mismatch: drops the future so nothing more runs.
    pub(crate) fn park(&mut self) {
        self.future = None;
    }

    fn state(&self) -> &EngineState {
        self.state.as_ref().expect("state is present between polls")
    }

    fn poll(&mut self) -> Progress {
        let Some(future) = self.future.as_mut() else {
            return Progress {
                commands: Vec::new(),
                status: Status::Parked(ParkReason::Panicked {
                    message: "polled after the run ended".into(),
                }),
            };
        };
        let foreign_wake = self.woken.0.swap(false, Ordering::Relaxed);
        let state = self.state.take().expect("state is present between polls");
        let limits = state.limits;
        let mut cx = Context::from_waker(&self.waker);
        let (mut state, polled) = enter(state, || {
            scoped(limits, || catch_quietly(|| future.as_mut().poll(&mut cx)))
        });
        // A future that woke itself during the poll expects another poll the engine will
        // never make: as foreign as a wake from outside between polls.
        let foreign_wake = foreign_wake | self.woken.0.swap(false, Ordering::Relaxed);
        let commands = std::mem::take(&mut state.produced);
        let no_pending = state.pending.is_empty();
        self.state = Some(state);
        let status = match polled {
            _ if foreign_wake => Status::Parked(ParkReason::ForeignWake),
            Ok(Poll::Ready(Ok(output))) => Status::Completed(output),
            Ok(Poll::Ready(Err(reason))) => Status::Parked(ParkReason::BadResult { reason }),
            Ok(Poll::Pending) if no_pending => Status::Parked(ParkReason::NonDurableAwait),
            Ok(Poll::Pending) => Status::Running,
            Err(payload) => Status::Parked(ParkReason::Panicked {
                message: panic_message(&*payload),
            }),
        };
        if status != Status::Running {
            // Dropped outside the ambient context: abandoned steps have nothing to tell.
            self.future = None;
        }
        Progress { commands, status }
    }
}
