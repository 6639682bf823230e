//! Durable futures: each `.await` on one of these is a checkpoint.
//!
//! On first poll a future schedules its command (getting the next position); afterwards it
//! resolves once the engine has delivered the command's completion. Nothing here wakes a waker:
//! the engine polls the instance after every event it applies.

use crate::context::{try_with_state, with_state};
use crate::{
    Command, EncodeError, Limits, NoError, Payload, Position, StepError, StepOutcome, Timestamp,
};
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The untyped durable step every typed future is built on.
#[derive(Debug)]
pub struct DurableStep {
    state: StepState,
    location: &'static Location<'static>,
}

#[derive(Debug)]
enum StepState {
    New(Command),
    Waiting(Position),
    Done,
}

impl DurableStep {
    /// A step that will schedule `command` when first polled.
    pub fn new(command: Command, location: &'static Location<'static>) -> Self {
        Self {
            state: StepState::New(command),
            location,
        }
    }
}

impl DurableStep {
    /// Schedules the command now, in the current poll (the command gets its position now),
    /// unless it already is.
    fn dispatch(&mut self) {
        if let StepState::New(_) = self.state {
            let StepState::New(command) = std::mem::replace(&mut self.state, StepState::Done)
            else {
                unreachable!("checked above")
            };
            self.state = StepState::Waiting(with_state(|s| s.schedule(command, self.location)));
        }
    }

    /// Whether the outcome is there: taken already, or delivered and waiting for the next
    /// poll. Decided by the history applied so far, so the same on every replay.
    fn is_completed(&self) -> bool {
        match self.state {
            StepState::New(_) => false,
            StepState::Waiting(position) => with_state(|s| s.is_ready(position)),
            StepState::Done => true,
        }
    }
}

impl Future for DurableStep {
    type Output = StepOutcome;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<StepOutcome> {
        let this = self.get_mut();
        let position = match std::mem::replace(&mut this.state, StepState::Done) {
            StepState::New(command) => with_state(|s| s.schedule(command, this.location)),
            StepState::Waiting(position) => position,
            StepState::Done => panic!("a durable step was polled after it completed"),
        };
        match with_state(|s| s.take_ready(position)) {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                this.state = StepState::Waiting(position);
                Poll::Pending
            }
        }
    }
}

impl Drop for DurableStep {
    fn drop(&mut self) {
        if let StepState::Waiting(position) = self.state {
            try_with_state(|s| s.abandon(position));
        }
    }
}

/// A call to a service method, built by a generated service stub. `.await` it inside a
/// workflow to run the call as a durable step.
///
/// `T` is the method's success value and `E` its error type (`NoError` for methods that do not
/// return `Result`).
///
/// The arguments are encoded when the call is awaited, within the running workflow's
/// [`Limits`]: arguments that cross them make the step resolve to `StepError::Invalid` naming
/// the limit, and nothing is scheduled.
#[must_use = "a service call does nothing until it is awaited"]
pub struct ServiceCall<T, E = NoError> {
    service: &'static str,
    method: &'static str,
    args: Args,
    location: &'static Location<'static>,
    _types: PhantomData<fn() -> (T, E)>,
}

/// A call's arguments, encoded on demand under the limits of whoever sends them. Generated
/// stubs build it from the argument tuple, so a call's type says nothing of its arguments.
///
/// ```
/// use infinitic_core::{Args, Limits, ServiceCall};
/// let call: ServiceCall<u64> = ServiceCall::from_args("Bank", "balance", Args::new(("ada",)));
/// assert_eq!(call.method(), "balance");
/// ```
pub struct Args(Box<EncodeArgs>);

type EncodeArgs = dyn Fn(&Limits) -> Result<Payload, EncodeError> + Send;

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Args")
    }
}

impl Args {
    /// Arguments `args` (the argument tuple), encoded when the call is sent.
    pub fn new<A: serde::Serialize + Send + 'static>(args: A) -> Self {
        Self(Box::new(move |limits| limits.encode(&args)))
    }

    fn encode(&self, limits: &Limits) -> Result<Payload, EncodeError> {
        (self.0)(limits)
    }
}

impl<T, E> std::fmt::Debug for ServiceCall<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCall")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl<T, E> ServiceCall<T, E> {
    /// Builds a call; generated stubs call this with `#[track_caller]` so the location is the
    /// user's line. `args` is the argument tuple.
    #[track_caller]
    pub fn new<A: serde::Serialize + Send + 'static>(
        service: &'static str,
        method: &'static str,
        args: A,
    ) -> Self {
        Self {
            service,
            method,
            args: Args::new(args),
            location: Location::caller(),
            _types: PhantomData,
        }
    }

    /// Builds a call from arguments already wrapped (what generated stubs do).
    #[track_caller]
    pub fn from_args(service: &'static str, method: &'static str, args: Args) -> Self {
        Self {
            service,
            method,
            args,
            location: Location::caller(),
            _types: PhantomData,
        }
    }

    /// The target service's name.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The target method's name.
    pub fn method(&self) -> &'static str {
        self.method
    }
}

impl<T: DeserializeOwned, E: DeserializeOwned> ServiceCall<T, E> {
    /// Sends the call now and returns it to await later: the call runs while the workflow
    /// goes on. (`.await` on the call itself sends it when it is awaited; a call bound to a
    /// variable and not awaited sends nothing.)
    ///
    /// ```no_run
    /// # use infinitic_core::{ServiceCall, StepError, NoError};
    /// # async fn demo(price: ServiceCall<u64>, stock: ServiceCall<u64>) -> Result<u64, StepError<NoError>> {
    /// let price = price.dispatch(); // sent now
    /// let stock = stock.await?;     // sent and awaited; the price call runs meanwhile
    /// let price = price.await?;
    /// # Ok(price * stock)
    /// # }
    /// ```
    pub fn dispatch(self) -> TypedStep<T, E> {
        let mut step = self.into_future();
        step.dispatch();
        step
    }

    /// Sends the call now and never waits for it (fire and forget): it runs, with its
    /// retries, and its outcome is ignored, even if the workflow has ended by then.
    pub fn dispatch_detached(self) {
        drop(self.dispatch());
    }
}

impl<T: DeserializeOwned, E: DeserializeOwned> IntoFuture for ServiceCall<T, E> {
    type Output = Result<T, StepError<E>>;
    type IntoFuture = TypedStep<T, E>;

    fn into_future(self) -> TypedStep<T, E> {
        let step = self.args.encode(&Limits::current()).map(|args| {
            DurableStep::new(
                Command::CallService {
                    service: Cow::Borrowed(self.service),
                    method: Cow::Borrowed(self.method),
                    args,
                },
                self.location,
            )
        });
        TypedStep::new(step, self.service, self.method)
    }
}

/// A call to a workflow method: `.await` it in a workflow to run a child workflow; give it to a
/// client to start an instance. Built by a generated workflow stub.
///
/// The arguments are encoded where the call is sent, within the sender's [`Limits`]: the
/// running workflow's for a child workflow (crossing them resolves the step to
/// `StepError::Invalid`), the client's or tester's for a start.
#[must_use = "a workflow call does nothing until it is awaited or started"]
pub struct WorkflowCall<R> {
    workflow: &'static str,
    method: &'static str,
    args: Args,
    location: &'static Location<'static>,
    _result: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for WorkflowCall<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowCall")
            .field("workflow", &self.workflow)
            .field("method", &self.method)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl<R> WorkflowCall<R> {
    /// Builds a call; generated stubs call this with `#[track_caller]`. `args` is the argument
    /// tuple.
    #[track_caller]
    pub fn new<A: serde::Serialize + Send + 'static>(
        workflow: &'static str,
        method: &'static str,
        args: A,
    ) -> Self {
        Self {
            workflow,
            method,
            args: Args::new(args),
            location: Location::caller(),
            _result: PhantomData,
        }
    }

    /// Builds a call from arguments already wrapped (what generated stubs do).
    #[track_caller]
    pub fn from_args(workflow: &'static str, method: &'static str, args: Args) -> Self {
        Self {
            workflow,
            method,
            args,
            location: Location::caller(),
            _result: PhantomData,
        }
    }

    /// The workflow's name.
    pub fn workflow(&self) -> &'static str {
        self.workflow
    }

    /// The method's name.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// Encodes the arguments within `limits`.
    ///
    /// ```
    /// use infinitic_core::{EncodeError, LimitError, Limits, WorkflowCall};
    /// let call: WorkflowCall<()> = WorkflowCall::new("Billing", "run", (vec![0u8; 100],));
    /// assert!(call.encode_args(&Limits::default()).is_ok());
    /// let small = Limits { max_payload_bytes: 64, ..Limits::default() };
    /// assert!(matches!(
    ///     call.encode_args(&small),
    ///     Err(EncodeError::Limit(LimitError::TooLarge { limit: 64, .. }))
    /// ));
    /// ```
    pub fn encode_args(&self, limits: &Limits) -> Result<Payload, EncodeError> {
        self.args.encode(limits)
    }
}

impl<R: DeserializeOwned> WorkflowCall<R> {
    /// Starts the child workflow now and returns it to await later; the parent goes on
    /// meanwhile. Its id is the command id, as for an awaited child.
    ///
    /// ```no_run
    /// # use infinitic_core::{WorkflowCall, StepError, NoError};
    /// # async fn demo(a: WorkflowCall<u64>, b: WorkflowCall<u64>) -> Result<u64, StepError<NoError>> {
    /// let a = a.dispatch(); // both children run at once
    /// let b = b.dispatch();
    /// # Ok(a.await? + b.await?)
    /// # }
    /// ```
    pub fn dispatch(self) -> TypedStep<R, NoError> {
        let mut step = self.into_future();
        step.dispatch();
        step
    }

    /// Starts the child workflow now and never waits for it (fire and forget): it runs to
    /// its end on its own; its result is ignored, even if the parent has ended by then.
    pub fn dispatch_detached(self) {
        drop(self.dispatch());
    }
}

impl<R: DeserializeOwned> IntoFuture for WorkflowCall<R> {
    type Output = Result<R, StepError<NoError>>;
    type IntoFuture = TypedStep<R, NoError>;

    fn into_future(self) -> TypedStep<R, NoError> {
        let step = self.args.encode(&Limits::current()).map(|args| {
            DurableStep::new(
                Command::StartChild {
                    workflow: Cow::Borrowed(self.workflow),
                    method: Cow::Borrowed(self.method),
                    args,
                },
                self.location,
            )
        });
        TypedStep::new(step, self.workflow, self.method)
    }
}

/// A durable step that decodes its outcome into `Result<T, StepError<E>>`.
#[derive(Debug)]
pub struct TypedStep<T, E> {
    step: Result<DurableStep, Option<String>>,
    _types: PhantomData<fn() -> (T, E)>,
}

impl<T, E> TypedStep<T, E> {
    fn new(step: Result<DurableStep, EncodeError>, target: &str, method: &str) -> Self {
        let step = step.map_err(|e| {
            Some(format!(
                "cannot encode arguments of {target}::{method}: {e}"
            ))
        });
        Self {
            step,
            _types: PhantomData,
        }
    }
}

impl<T, E> TypedStep<T, E> {
    fn dispatch(&mut self) {
        if let Ok(step) = &mut self.step {
            step.dispatch();
        }
    }

    /// Whether the step has completed, without waiting: for a dispatched call, whether its
    /// outcome has arrived (`.await` then returns at once). Decided by the history applied so
    /// far, so a replay sees the same answers.
    ///
    /// ```no_run
    /// # use infinitic_core::{ServiceCall, workflow};
    /// # async fn demo(report: ServiceCall<u64>) {
    /// let report = report.dispatch();
    /// workflow::sleep(std::time::Duration::from_secs(60)).await;
    /// if !report.is_completed() {
    ///     // still running after a minute
    /// }
    /// # }
    /// ```
    pub fn is_completed(&self) -> bool {
        match &self.step {
            Ok(step) => step.is_completed(),
            // Refused before it was sent: its outcome (`StepError::Invalid`) is known.
            Err(_) => true,
        }
    }
}

impl<T: DeserializeOwned, E: DeserializeOwned> Future for TypedStep<T, E> {
    type Output = Result<T, StepError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.step {
            Ok(step) => Pin::new(step).poll(cx).map(StepOutcome::into_typed),
            Err(reason) => Poll::Ready(Err(StepError::Invalid {
                reason: reason.take().unwrap_or_default(),
            })),
        }
    }
}

/// A durable timer (see `workflow::sleep`). Resolves when the timer fires.
#[must_use = "a timer does nothing until it is awaited"]
#[derive(Debug)]
pub struct Sleep {
    step: DurableStep,
}

impl Sleep {
    #[track_caller]
    pub(crate) fn until(fire_at: Timestamp) -> Self {
        Self {
            step: DurableStep::new(Command::StartTimer { fire_at }, Location::caller()),
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.step).poll(cx).map(|_| ())
    }
}
