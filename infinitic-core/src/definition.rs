//! What the macros implement: the type-erased entry points the engine and workers call.

use crate::Payload;
use std::future::Future;
use std::pin::Pin;

/// A running workflow method, type-erased: resolves to the encoded return value, or to why it
/// could not be encoded.
pub type WorkflowFuture = Pin<Box<dyn Future<Output = Result<Payload, String>> + Send>>;

/// A running service task, type-erased.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Payload, TaskError>> + Send>>;

/// A message could not be turned into a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// The target has no method of this name.
    #[error("`{target}` has no method `{method}`")]
    UnknownMethod {
        /// Service or workflow name.
        target: String,
        /// The unknown method.
        method: String,
    },
    /// The arguments do not decode as the method's parameter types.
    #[error("arguments of `{target}::{method}` cannot be decoded: {reason}")]
    BadArguments {
        /// Service or workflow name.
        target: String,
        /// Method name.
        method: String,
        /// The decoder's message.
        reason: String,
    },
}

/// Why one attempt at a service task did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The method returned `Err(e)`; `error` is `e` encoded.
    #[error("the service returned an error: {message}")]
    Failed {
        /// The encoded error.
        error: Payload,
        /// `e` rendered with `Debug`.
        message: String,
    },
    /// The method panicked.
    #[error("the service panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The message could not be turned into a call (never retried: it cannot get better).
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The method's result could not be encoded.
    #[error("the service's result cannot be encoded: {reason}")]
    BadResult {
        /// The encoder's message.
        reason: String,
    },
}

impl TaskError {
    /// Whether another attempt could succeed (errors and panics), as opposed to a message that
    /// can never be served (dead-letter it).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskError::Failed { .. } | TaskError::Panicked { .. })
    }

    /// What the waiting workflow sees when the task ends with this error after `attempts`
    /// attempts.
    ///
    /// ```
    /// use infinitic_core::{StepOutcome, TaskError};
    /// let panicked = TaskError::Panicked { message: "boom".into() };
    /// assert_eq!(
    ///     panicked.into_outcome(3),
    ///     StepOutcome::Panicked { message: "boom".into(), attempts: 3 }
    /// );
    /// ```
    pub fn into_outcome(self, attempts: u32) -> crate::StepOutcome {
        use crate::StepOutcome;
        match self {
            TaskError::Failed { error, message } => StepOutcome::Failed {
                error,
                message,
                attempts,
            },
            TaskError::Panicked { message } => StepOutcome::Panicked { message, attempts },
            TaskError::Dispatch(error) => error.into(),
            TaskError::BadResult { reason } => StepOutcome::Invalid { reason },
        }
    }
}

impl From<DispatchError> for crate::StepOutcome {
    /// An unknown method is [`StepOutcome::Unknown`](crate::StepOutcome::Unknown), arguments
    /// that do not decode are [`StepOutcome::Invalid`](crate::StepOutcome::Invalid).
    fn from(error: DispatchError) -> Self {
        use crate::StepOutcome;
        let reason = error.to_string();
        match error {
            DispatchError::UnknownMethod { .. } => StepOutcome::Unknown { reason },
            DispatchError::BadArguments { .. } => StepOutcome::Invalid { reason },
        }
    }
}

/// A workflow implementation, as registered with a worker or `WorkflowTester`. Implemented by
/// `#[workflow]` on an `impl` block.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a registered workflow implementation",
    label = "not a workflow",
    note = "put `#[workflow]` on the `impl` block of the workflow trait for `{Self}` too: it \
            registers the implementation and checks its code for determinism"
)]
pub trait Workflow: Send + Sync + Sized + 'static {
    /// The workflow's name (from its trait).
    const NAME: &'static str;

    /// Its channels (`#[channel]` on the trait) and how many signals each buffers.
    const CHANNELS: &'static [(&'static str, usize)] = &[];

    /// Starts `method` with encoded `input` on this (fresh) instance of the implementation.
    fn start(self, method: &str, input: &[u8]) -> Result<WorkflowFuture, DispatchError>;
}

/// A registered workflow, type-erased: makes a fresh implementation value per run.
pub trait WorkflowDefinition: Send + Sync {
    /// The workflow's name.
    fn name(&self) -> &str;

    /// Starts `method` with encoded `input` on a fresh implementation value.
    fn start(&self, method: &str, input: &[u8]) -> Result<WorkflowFuture, DispatchError>;

    /// How many signals channel `channel` buffers; `None` if the workflow has no such
    /// channel.
    fn channel_capacity(&self, channel: &str) -> Option<usize> {
        let _ = channel;
        None
    }
}

/// A [`WorkflowDefinition`] from a constructor of the implementation.
///
/// ```ignore
/// let definition = WorkflowFactory::new(Billing::default);
/// ```
#[derive(Debug, Clone)]
pub struct WorkflowFactory<F> {
    make: F,
}

impl<F> WorkflowFactory<F> {
    /// A definition that calls `make` for every run.
    pub fn new<W>(make: F) -> Self
    where
        F: Fn() -> W + Send + Sync,
        W: Workflow,
    {
        Self { make }
    }
}

impl<W: Workflow, F: Fn() -> W + Send + Sync> WorkflowDefinition for WorkflowFactory<F> {
    fn name(&self) -> &str {
        W::NAME
    }

    fn start(&self, method: &str, input: &[u8]) -> Result<WorkflowFuture, DispatchError> {
        (self.make)().start(method, input)
    }

    fn channel_capacity(&self, channel: &str) -> Option<usize> {
        W::CHANNELS
            .iter()
            .find(|(name, _)| *name == channel)
            .map(|(_, capacity)| *capacity)
    }
}

/// A service implementation, as registered with a worker or `WorkflowTester`. Implemented by
/// the `…Dispatcher` type that `#[service]` generates.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a service dispatcher",
    label = "not a service",
    note = "register the dispatcher `#[service]` generated for the trait, wrapping your \
            implementation: `.service(MyTraitDispatcher::new(implementation))`"
)]
pub trait Service: Send + Sync + 'static {
    /// The service's name.
    fn name(&self) -> &'static str;

    /// Its method names.
    fn methods(&self) -> &'static [&'static str];

    /// Decodes `args` for `method`, calls the implementation and encodes its result. Never
    /// panics: a panic in the implementation becomes [`TaskError::Panicked`].
    fn dispatch(&self, method: &str, args: &[u8]) -> TaskFuture;
}
