//! The ambient workflow context: the engine's per-instance state, reachable from workflow code
//! only while the engine polls that instance.
//!
//! The state is moved into a thread-local for the duration of one poll and moved back out
//! after, so durable futures hold plain data (they stay `Send`) and nothing is shared.

use crate::rng::SplitMix64;
use crate::signal::{Buffered, Matcher, Receiver};
use crate::{
    Command, CommandRecord, Generation, Limits, MethodRun, Payload, Position, StepOutcome,
    Timestamp, WorkflowId,
};
use std::cell::RefCell;
use std::panic::Location;

/// Per-instance engine state that workflow code reads and writes through `workflow::*` and
/// durable futures.
#[derive(Debug)]
pub(crate) struct EngineState {
    pub(crate) workflow_id: WorkflowId,
    pub(crate) run: MethodRun,
    pub(crate) now: Timestamp,
    pub(crate) rng: SplitMix64,
    /// Position the next created command gets; every position below it is known.
    pub(crate) next_position: Position,
    /// Created and neither completed nor abandoned (dropped unfinished), in increasing order.
    /// Small sorted vectors rather than maps: a run waits on few steps at a time, and an empty
    /// `BTreeMap` keeps its (for `ready`, 672-byte) node allocated in every idle instance.
    pub(crate) pending: Vec<Position>,
    /// Completed, waiting for their future to take the outcome at its next poll (usually at
    /// most one: the engine polls right after delivering).
    pub(crate) ready: Vec<(Position, StepOutcome)>,
    /// Commands created during the current poll.
    pub(crate) produced: Vec<CommandRecord>,
    /// Limits on the payloads the run encodes and decodes ([`Limits::current`] while polled).
    pub(crate) limits: Limits,
    /// Inline values and signals, allocated only by a run that uses them: most runs do not,
    /// and every cached idle instance would pay for the empty collections.
    pub(crate) extra: Option<Box<Extra>>,
}

/// The state of inline steps and signals.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    /// Values of inline steps recorded in the history being replayed, by position, handed to
    /// `workflow::inline` instead of running its closure again.
    pub(crate) recorded: Vec<(Position, Payload)>,
    /// Signals received and not taken yet, oldest first.
    pub(crate) buffered: Vec<Buffered>,
    /// Receives waiting for a signal, in position order.
    pub(crate) receivers: Vec<Receiver>,
    /// Signals received so far: the next one's sequence number.
    pub(crate) signals: u64,
    /// Ids of the signals received so far: one sent again changes nothing.
    pub(crate) signal_ids: std::collections::BTreeSet<String>,
}

impl EngineState {
    pub(crate) fn new(
        (workflow_id, generation): (WorkflowId, Generation),
        run: MethodRun,
        now: Timestamp,
        limits: Limits,
    ) -> Self {
        let id = workflow_id.as_str().as_bytes();
        let run_bytes = run.0.to_le_bytes();
        // The first generation keeps the seed of earlier builds, so replays draw the same.
        let rng = match generation {
            Generation(0) => SplitMix64::seeded(&[id, &run_bytes]),
            Generation(g) => SplitMix64::seeded(&[id, &run_bytes, &g.to_le_bytes()]),
        };
        Self {
            workflow_id,
            run,
            now,
            rng,
            next_position: 0,
            pending: Vec::new(),
            ready: Vec::new(),
            produced: Vec::new(),
            limits,
            extra: None,
        }
    }

    /// The inline and signal state, allocated on first use.
    pub(crate) fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The buffered signals, oldest first.
    pub(crate) fn buffered(&self) -> &[Buffered] {
        self.extra.as_ref().map_or(&[], |e| &e.buffered)
    }

    /// Takes up to `max` buffered signals of `channel` that `matcher` accepts, oldest first:
    /// their sequence numbers and values.
    pub(crate) fn take_buffered(
        &mut self,
        channel: &str,
        matcher: &Matcher,
        max: usize,
    ) -> Vec<(u64, Payload)> {
        let mut taken = Vec::new();
        let Some(extra) = self.extra.as_mut() else {
            return taken;
        };
        extra.buffered.retain(|b| {
            let take = taken.len() < max && b.channel == channel && matcher(&b.value);
            if take {
                taken.push((b.seq, b.value.clone()));
            }
            !take
        });
        taken
    }

    /// Records a command that completes as it is scheduled (an inline step): it gets the next
    /// position and goes to history, and nothing waits on it.
    pub(crate) fn schedule_settled(
        &mut self,
        command: Command,
        location: &'static Location<'static>,
    ) -> Position {
        let position = self.next_position;
        self.next_position += 1;
        self.produced.push(CommandRecord {
            position,
            command,
            location: Some(location),
        });
        position
    }

    /// The value history recorded for the inline step at `position`, if it did.
    pub(crate) fn take_recorded(&mut self, position: Position) -> Option<Payload> {
        let recorded = &mut self.extra.as_mut()?.recorded;
        let index = recorded.iter().position(|(p, _)| *p == position)?;
        Some(recorded.swap_remove(index).1)
    }

    pub(crate) fn schedule(
        &mut self,
        command: Command,
        location: &'static Location<'static>,
    ) -> Position {
        let position = self.next_position;
        self.next_position += 1;
        // Positions only grow, so pushing keeps `pending` sorted.
        self.pending.push(position);
        self.produced.push(CommandRecord {
            position,
            command,
            location: Some(location),
        });
        position
    }

    /// Removes `position` from the pending commands; false if it was not pending.
    pub(crate) fn settle(&mut self, position: Position) -> bool {
        match self.pending.binary_search(&position) {
            Ok(index) => {
                self.pending.remove(index);
                true
            }
            Err(_) => false,
        }
    }

    /// Hands a settled command's outcome to its future (taken at its next poll).
    pub(crate) fn deliver(&mut self, position: Position, outcome: StepOutcome) {
        if self.ready.capacity() == 0 {
            // One slot is the common case; `push` alone would reserve four.
            self.ready.reserve_exact(1);
        }
        self.ready.push((position, outcome));
    }

    /// Whether `position`'s outcome was delivered and not yet taken.
    pub(crate) fn is_ready(&self, position: Position) -> bool {
        self.ready.iter().any(|(p, _)| *p == position)
    }

    pub(crate) fn take_ready(&mut self, position: Position) -> Option<StepOutcome> {
        let index = self.ready.iter().position(|(p, _)| *p == position)?;
        Some(self.ready.swap_remove(index).1)
    }

    /// A durable future was dropped before its outcome arrived (the loser of a select):
    /// forget it, so a late outcome is ignored rather than kept forever.
    pub(crate) fn abandon(&mut self, position: Position) {
        self.settle(position);
        self.ready.retain(|(p, _)| *p != position);
        if let Some(extra) = self.extra.as_mut() {
            extra.receivers.retain(|r| r.position != position);
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Box<EngineState>>> = const { RefCell::new(None) };
}

/// Runs `f` with the instance's state installed as the ambient context, then takes it back.
/// `f` must not unwind (the engine wraps the poll in `catch_unwind`).
pub(crate) fn enter<R>(state: Box<EngineState>, f: impl FnOnce() -> R) -> (Box<EngineState>, R) {
    CURRENT.with(|current| {
        let previous = current.borrow_mut().replace(state);
        assert!(
            previous.is_none(),
            "a workflow instance was polled from inside another workflow instance"
        );
    });
    let result = f();
    let state = CURRENT
        .with(|current| current.borrow_mut().take())
        .expect("the engine state is installed for the whole poll");
    (state, result)
}

/// Gives workflow code access to its instance's state.
///
/// # Panics
/// Outside a running workflow (for example, awaiting a service stub in a plain `tokio::test`):
/// durable operations only exist inside a workflow run by the engine or `WorkflowTester`.
#[track_caller]
pub(crate) fn with_state<R>(f: impl FnOnce(&mut EngineState) -> R) -> R {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        match current.as_mut() {
            Some(state) => f(state),
            None => panic!(
                "infinitic: a workflow operation (durable step, timer, workflow::now, ...) was \
                 used outside a running workflow; run the workflow with a worker or WorkflowTester"
            ),
        }
    })
}

/// Runs `f` with the instance's state out of reach: workflow operations inside it panic with a
/// clear message (an inline step's closure must not draw from the workflow's own clock or
/// randomness, which replay would not advance). The state is put back even if `f` unwinds.
pub(crate) fn outside_workflow<R>(f: impl FnOnce() -> R) -> R {
    struct PutBack(Option<Box<EngineState>>);
    impl Drop for PutBack {
        fn drop(&mut self) {
            if let Some(state) = self.0.take() {
                CURRENT.with(|current| *current.borrow_mut() = Some(state));
            }
        }
    }
    let _put_back = PutBack(CURRENT.with(|current| current.borrow_mut().take()));
    f()
}

/// Like [`with_state`], but does nothing outside a running workflow (used from `Drop`).
pub(crate) fn try_with_state(f: impl FnOnce(&mut EngineState)) {
    CURRENT.with(|current| {
        if let Ok(mut current) = current.try_borrow_mut() {
            if let Some(state) = current.as_mut() {
                f(state);
            }
        }
    });
}
