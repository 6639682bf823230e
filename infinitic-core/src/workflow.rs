//! The API workflow code uses: the deterministic clock, durable timers, deterministic
//! randomness, the instance id, and deterministic parallel composition.
//!
//! Every function here reads or writes the running instance's recorded state, so a replay
//! sees exactly what the first execution saw. They panic when called outside a running
//! workflow.

pub use crate::branches::{
    join, race, Branches, Join2, Join3, Join4, Join5, Join6, Join7, Join8, OneOf2, OneOf3, OneOf4,
    OneOf5, OneOf6, OneOf7, OneOf8, Race2, Race3, Race4, Race5, Race6, Race7, Race8,
};
use crate::context::with_state;
use crate::durable::Sleep;
pub use crate::filter::{Compare, FieldFilter, Filter, Scalar};
pub use crate::signal::{Channel, Receive, ReceiveMany};
use crate::{Command, Limits, Timestamp, WorkflowId};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

/// The workflow clock: the time at which the event being processed was applied (the start
/// time before any event). Use it instead of `SystemTime::now()`.
pub fn now() -> SystemTime {
    with_state(|s| s.now.to_system_time())
}

/// The workflow clock as a [`Timestamp`].
pub fn timestamp() -> Timestamp {
    with_state(|s| s.now)
}

/// A durable timer that fires `duration` after the workflow clock's current time. It survives
/// crashes and redeployments; use it instead of `tokio::time::sleep`.
#[track_caller]
pub fn sleep(duration: Duration) -> Sleep {
    // Rounded up to whole milliseconds, like every deadline: a timer never fires early.
    Sleep::until(timestamp().plus_at_least(duration))
}

/// A durable timer that fires at `deadline` (at once if it is already past). Deadlines are
/// rounded up to the next whole millisecond, so after it `workflow::now() >= deadline`.
#[track_caller]
pub fn sleep_until(deadline: SystemTime) -> Sleep {
    Sleep::until(Timestamp::at_or_after(deadline))
}

/// An inline step: runs `f` once, records its value in the history, and on every replay
/// returns the recorded value without running `f` again. For what is quick, local and
/// may differ between runs (the wall clock, a random draw, a process setting) but must be the
/// same on replay; I/O belongs in a service (inside `f` it is still a compile error).
///
/// `f` runs outside the workflow's context: `workflow::*` functions panic in it (their draws
/// would not be replayed). A value that cannot be encoded within the workflow's limits, or
/// that history holds in another shape, parks the run with the reason.
///
/// ```no_run
/// # use infinitic_core::workflow;
/// # fn demo() {
/// let token: u64 = workflow::inline(|| std::process::id().into());
/// # }
/// ```
#[track_caller]
pub fn inline<T, F>(f: F) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: FnOnce() -> T,
{
    let location = std::panic::Location::caller();
    let recorded = with_state(|s| {
        let position = s.next_position;
        s.take_recorded(position)
    });
    let value = match recorded {
        Some(bytes) => {
            let value = Limits::current().decode(&bytes).unwrap_or_else(|e| {
                panic!(
                    "the inline step at {location} recorded a value that no longer decodes                      as its type: {e}"
                )
            });
            with_state(|s| s.schedule_settled(Command::Inline { value: bytes }, location));
            return value;
        }
        None => crate::context::outside_workflow(f),
    };
    let bytes = Limits::current().encode(&value).unwrap_or_else(|e| {
        panic!("the value of the inline step at {location} cannot be recorded: {e}")
    });
    with_state(|s| s.schedule_settled(Command::Inline { value: bytes }, location));
    value
}

/// Sends `value` to channel `channel` of instance `instance` (fire and forget: the send is
/// recorded, and the signal travels once whatever happens to this instance). A target that
/// does not exist, has ended or has no room left on the channel sets the signal aside as a
/// dead letter with the reason. `Err` if the value cannot be encoded within the limits.
///
/// ```no_run
/// # use infinitic_core::{workflow, ChannelRef};
/// # fn demo(cancel: ChannelRef<String>) {
/// workflow::signal("order-42", cancel, "out of stock".to_string()).expect("small value");
/// # }
/// ```
#[track_caller]
pub fn signal<T: serde::Serialize>(
    instance: impl Into<WorkflowId>,
    channel: crate::ChannelRef<T>,
    value: T,
) -> Result<(), crate::EncodeError> {
    let location = std::panic::Location::caller();
    let value = Limits::current().encode(&value)?;
    let command = Command::SendSignal {
        workflow: channel.workflow().to_string(),
        instance: instance.into().to_string(),
        channel: channel.channel().to_string(),
        value,
    };
    with_state(|s| s.schedule_settled(command, location));
    Ok(())
}

/// A deterministic random number: the same on every replay of this instance.
pub fn random() -> u64 {
    with_state(|s| s.rng.next_u64())
}

/// A deterministic random number in `range` (`start..end`, end excluded).
///
/// # Panics
/// If the range is empty.
pub fn random_range(range: std::ops::Range<u64>) -> u64 {
    assert!(
        range.start < range.end,
        "workflow::random_range: empty range"
    );
    let span = range.end - range.start;
    // Rejection sampling keeps the distribution uniform.
    let zone = u64::MAX - (u64::MAX % span);
    loop {
        let x = random();
        if x < zone {
            return range.start + x % span;
        }
    }
}

/// A deterministic random (version 4) UUID: the same on every replay of this instance.
pub fn uuid() -> uuid::Uuid {
    let high = u128::from(random()) << 64;
    let bytes = (high | u128::from(random())).to_be_bytes();
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The id of the running instance.
pub fn id() -> WorkflowId {
    with_state(|s| s.workflow_id.clone())
}

/// Runs durable operations in parallel and resolves to all their outputs, in input order.
///
/// Children are polled in input order, so the commands they schedule get the same positions
/// on every replay whatever order their results arrive in.
pub fn join_all<I>(steps: I) -> JoinAll<<I::Item as IntoFuture>::IntoFuture>
where
    I: IntoIterator,
    I::Item: IntoFuture,
{
    JoinAll {
        slots: steps
            .into_iter()
            .map(|s| Slot::Running(Box::pin(s.into_future())))
            .collect(),
    }
}

/// Future of [`join_all`].
#[must_use = "futures do nothing unless awaited"]
pub struct JoinAll<F: Future> {
    slots: Vec<Slot<F>>,
}

impl<F: Future> std::fmt::Debug for JoinAll<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinAll")
            .field("len", &self.slots.len())
            .finish()
    }
}

// Children are boxed and outputs are never pinned, so moving a JoinAll is fine.
impl<F: Future> Unpin for JoinAll<F> {}

enum Slot<F: Future> {
    Running(Pin<Box<F>>),
    Done(Option<F::Output>),
}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut all_done = true;
        for slot in self.slots.iter_mut() {
            if let Slot::Running(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(output) => *slot = Slot::Done(Some(output)),
                    Poll::Pending => all_done = false,
                }
            }
        }
        if !all_done {
            return Poll::Pending;
        }
        let outputs = self
            .slots
            .iter_mut()
            .map(|slot| match slot {
                Slot::Done(output) => output.take().expect("join_all output taken once"),
                Slot::Running(_) => unreachable!("all slots are done"),
            })
            .collect();
        Poll::Ready(outputs)
    }
}

/// Runs durable operations in parallel and resolves to the first to finish, with its index.
/// The others are dropped: their late results are ignored.
///
/// "First" is the order in which results were applied, recorded in history; when several are
/// ready at one poll the lowest index wins. Both are replayed identically.
///
/// # Panics
/// If `steps` is empty.
pub fn select<I>(steps: I) -> Select<<I::Item as IntoFuture>::IntoFuture>
where
    I: IntoIterator,
    I::Item: IntoFuture,
{
    let futures: Vec<_> = steps
        .into_iter()
        .map(|s| Box::pin(s.into_future()))
        .collect();
    assert!(
        !futures.is_empty(),
        "workflow::select needs at least one step"
    );
    Select { futures }
}

/// Future of [`select`].
#[must_use = "futures do nothing unless awaited"]
pub struct Select<F: Future> {
    futures: Vec<Pin<Box<F>>>,
}

impl<F: Future> std::fmt::Debug for Select<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("len", &self.futures.len())
            .finish()
    }
}

impl<F: Future> Future for Select<F> {
    type Output = (usize, F::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        for (index, future) in self.futures.iter_mut().enumerate() {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready((index, output));
            }
        }
        Poll::Pending
    }
}

/// The output of [`select2`]: which of two differently-typed operations finished first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first finished first.
    Left(A),
    /// The second finished first.
    Right(B),
}

/// Like [`select`] for two operations of different types (a step against a timeout timer,
/// say).
pub fn select2<A: IntoFuture, B: IntoFuture>(a: A, b: B) -> Select2<A::IntoFuture, B::IntoFuture> {
    Select2 {
        a: Box::pin(a.into_future()),
        b: Box::pin(b.into_future()),
    }
}

/// Future of [`select2`].
#[must_use = "futures do nothing unless awaited"]
pub struct Select2<A, B> {
    a: Pin<Box<A>>,
    b: Pin<Box<B>>,
}

impl<A, B> std::fmt::Debug for Select2<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Select2")
    }
}

impl<A: Future, B: Future> Future for Select2<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(a) = self.a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(a));
        }
        self.b.as_mut().poll(cx).map(Either::Right)
    }
}

/// Runs two differently-typed operations in parallel and resolves to both outputs.
pub async fn join2<A: IntoFuture, B: IntoFuture>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = Box::pin(a.into_future());
    let mut b = Box::pin(b.into_future());
    let (mut a_out, mut b_out) = (None, None);
    std::future::poll_fn(|cx| {
        if a_out.is_none() {
            if let Poll::Ready(out) = a.as_mut().poll(cx) {
                a_out = Some(out);
            }
        }
        if b_out.is_none() {
            if let Poll::Ready(out) = b.as_mut().poll(cx) {
                b_out = Some(out);
            }
        }
        match (a_out.take(), b_out.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                (a_out, b_out) = (a, b);
                Poll::Pending
            }
        }
    })
    .await
}
