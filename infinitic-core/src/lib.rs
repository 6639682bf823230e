//! The pure core of infinitic: ids, messages, history and the deterministic replay engine.
//!
//! Nothing here does I/O or depends on an async runtime: the engine is a function of the
//! workflow code and the events it is fed, so it is tested as such.
//!
//! - [`WorkflowInstance`] is a live (sticky) method run: feed it one [`Completion`] at a time.
//! - [`replay`] rebuilds an instance from its [`History`], checking determinism.
//! - [`workflow`] is the API workflow code calls (clock, timers, randomness, parallelism).
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod bounded;
mod branches;
mod codec;
mod command;
mod context;
mod definition;
mod depth;
mod durable;
mod engine;
mod filter;
mod history;
mod ids;
mod limits;
pub mod message;
mod outcome;
mod panic;
mod replay;
mod retry;
mod rng;
mod signal;
pub mod task;
mod time;
pub mod workflow;

pub use codec::{decode, encode, CodecError, Payload};
pub use command::{Command, CommandRecord, CommandSignature};
pub use definition::{
    DispatchError, Service, TaskError, TaskFuture, Workflow, WorkflowDefinition, WorkflowFactory,
    WorkflowFuture,
};
pub use durable::{Args, DurableStep, ServiceCall, Sleep, TypedStep, WorkflowCall};
pub use engine::{
    Applied, IgnoredReason, Mismatch, ParkReason, Progress, RejectedEvent, Signaled, Start, Status,
    WorkflowInstance,
};
pub use history::{buffered_signals, outstanding, Completion, History, HistoryEvent, Outstanding};
pub use ids::{CommandId, Generation, MethodRun, Position, WorkflowId};
pub use limits::{EncodeError, LimitError, Limits};
pub use outcome::{NoError, StepError, StepOutcome};
pub use panic::{catch_quietly, catching_panics, panic_message, CatchUnwind};
pub use replay::{replay, replay_with_limits, Replay};
pub use retry::RetryPolicy;
pub use signal::{ChannelRef, Signal};
pub use time::Timestamp;
