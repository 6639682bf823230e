//! Signals: values sent to a running instance on a named channel (an approval, a payment
//! webhook, a user cancelling). A signal that arrives before the code waits for it is buffered
//! (bounded per channel); a receive takes the oldest buffered signal that matches it, or waits
//! for the next one. Every arrival is recorded in history with where it went (to a waiting
//! receive, or to the buffer), and every receive with what it took, so a replay rebuilds the
//! same buffer and hands the same values to the same receives.

use crate::context::with_state;
use crate::filter::Filter;
use crate::{Command, Limits, Payload, Position, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::marker::PhantomData;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A signal as history records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The sender's id for it: a signal delivered again with the same id changes nothing.
    pub id: String,
    /// The channel it was sent to.
    pub channel: String,
    /// The encoded value.
    pub value: Payload,
    /// When the instance received it: the workflow clock moves to it.
    pub at: Timestamp,
    /// The waiting receive (its position) that took it, or `None`: buffered.
    pub to: Option<Position>,
}

/// A channel of the running workflow, as its code sees it: declared on the workflow trait
/// with `#[channel]`, reached as `self.approvals()`.
///
/// ```no_run
/// # use infinitic_core::workflow::{Channel, Filter};
/// # async fn demo(approvals: Channel<String>) {
/// let first = approvals.receive().await;
/// let from_ada = approvals.clone().filtered(Filter::field("").eq("ada")).receive().await;
/// let waiting = approvals.is_buffered();
/// # }
/// ```
pub struct Channel<T> {
    name: &'static str,
    filter: Option<Filter>,
    _value: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("filter", &self.filter)
            .finish()
    }
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            filter: self.filter.clone(),
            _value: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Channel<T> {
    /// The channel `name` (generated code calls this).
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            filter: None,
            _value: PhantomData,
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The same channel, taking only signals that pass `filter` (and `filter` of any earlier
    /// call: both must hold).
    pub fn filtered(mut self, filter: Filter) -> Self {
        self.filter = Some(match self.filter.take() {
            Some(earlier) => earlier.and(filter),
            None => filter,
        });
        self
    }

    /// Waits for a signal (the oldest buffered one that passes the filter, or the next to
    /// arrive) and returns its value. Race it against a timer with `workflow::select2` or
    /// `workflow::race` to bound the wait.
    #[track_caller]
    pub fn receive(&self) -> Receive<T> {
        Receive {
            many: self.receive_up_to(1),
        }
    }

    /// Waits for at least one signal, then returns up to `max` of them: every matching one
    /// already buffered (oldest first, at most `max`), or the next to arrive.
    #[track_caller]
    pub fn receive_up_to(&self, max: usize) -> ReceiveMany<T> {
        ReceiveMany {
            channel: self.name,
            filter: self.filter.clone(),
            max: u32::try_from(max.max(1)).unwrap_or(u32::MAX),
            state: ReceiveState::New,
            location: Location::caller(),
            _value: PhantomData,
        }
    }

    /// Whether a signal that passes the filter is buffered now, without waiting or taking it.
    /// Read from the history applied so far, so a replay sees the same answer.
    pub fn is_buffered(&self) -> bool {
        let filter = self.filter.as_ref();
        with_state(|s| {
            s.buffered()
                .iter()
                .any(|b| b.channel == self.name && Filter::accepts_encoded::<T>(filter, &b.value))
        })
    }
}

/// Future of [`Channel::receive`]: one value.
#[must_use = "a receive does nothing until it is awaited"]
#[derive(Debug)]
pub struct Receive<T> {
    many: ReceiveMany<T>,
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Future for Receive<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.many).poll(cx).map(|values| {
            values
                .into_iter()
                .next()
                .expect("a receive resolves with at least one value")
        })
    }
}

/// Future of [`Channel::receive_up_to`].
#[must_use = "a receive does nothing until it is awaited"]
pub struct ReceiveMany<T> {
    channel: &'static str,
    filter: Option<Filter>,
    max: u32,
    state: ReceiveState,
    location: &'static Location<'static>,
    _value: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ReceiveMany<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveMany")
            .field("channel", &self.channel)
            .field("filter", &self.filter)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum ReceiveState {
    New,
    Waiting(Position),
    Done,
}

// Nothing in it is pinned.
impl<T> Unpin for ReceiveMany<T> {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Future for ReceiveMany<T> {
    type Output = Vec<T>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Vec<T>> {
        let this = &mut *self;
        match std::mem::replace(&mut this.state, ReceiveState::Done) {
            ReceiveState::New => {
                let filter = this.filter.clone();
                let matcher: Matcher =
                    Box::new(move |bytes| Filter::accepts_encoded::<T>(filter.as_ref(), bytes));
                let (channel, max, location) = (this.channel, this.max, this.location);
                let command = |took| Command::Receive {
                    channel: channel.to_string(),
                    filter: this.filter.clone(),
                    max,
                    took,
                };
                let taken = with_state(|s| s.take_buffered(channel, &matcher, max as usize));
                if !taken.is_empty() {
                    let (seqs, values): (Vec<u64>, Vec<Payload>) = taken.into_iter().unzip();
                    with_state(|s| s.schedule_settled(command(seqs), location));
                    return Poll::Ready(values.iter().map(|v| decode_signal(channel, v)).collect());
                }
                let position = with_state(|s| {
                    let position = s.schedule(command(Vec::new()), location);
                    s.extra().receivers.push(Receiver {
                        position,
                        channel,
                        matcher,
                    });
                    position
                });
                this.state = ReceiveState::Waiting(position);
                Poll::Pending
            }
            ReceiveState::Waiting(position) => match with_state(|s| s.take_ready(position)) {
                Some(crate::StepOutcome::Completed(value)) => {
                    Poll::Ready(vec![decode_signal(this.channel, &value)])
                }
                Some(other) => panic!("a receive on `{}` got {other:?}", this.channel),
                None => {
                    this.state = ReceiveState::Waiting(position);
                    Poll::Pending
                }
            },
            ReceiveState::Done => panic!("a receive was polled after it completed"),
        }
    }
}

impl<T> Drop for ReceiveMany<T> {
    fn drop(&mut self) {
        if let ReceiveState::Waiting(position) = self.state {
            // A receive that lost a race: a later signal goes elsewhere, or to the buffer.
            crate::context::try_with_state(|s| s.abandon(position));
        }
    }
}

fn decode_signal<T: DeserializeOwned>(channel: &str, bytes: &[u8]) -> T {
    Limits::current().decode(bytes).unwrap_or_else(|e| {
        panic!("a signal received on `{channel}` no longer decodes as the channel's type: {e}")
    })
}

/// Whether an encoded signal value is for a waiting receive.
pub(crate) type Matcher = Box<dyn Fn(&[u8]) -> bool + Send>;

/// A receive waiting for a signal.
pub(crate) struct Receiver {
    pub(crate) position: Position,
    pub(crate) channel: &'static str,
    pub(crate) matcher: Matcher,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("position", &self.position)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// A buffered signal: its sequence number among the instance's signals, its channel, its
/// value.
#[derive(Clone, Debug)]
pub(crate) struct Buffered {
    pub(crate) seq: u64,
    pub(crate) channel: String,
    pub(crate) value: Payload,
}

/// A channel of a workflow, as clients and other workflows name it: built by the workflow's
/// stub (`BillingWorkflowStub.unsubscribe()`), given to `Client::signal` or
/// `workflow::signal` with a value.
pub struct ChannelRef<T> {
    workflow: &'static str,
    channel: &'static str,
    _value: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ChannelRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelRef({}::{})", self.workflow, self.channel)
    }
}

impl<T> Clone for ChannelRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ChannelRef<T> {}

impl<T: Serialize> ChannelRef<T> {
    /// Channel `channel` of the workflow named `workflow` (generated code calls this).
    pub const fn new(workflow: &'static str, channel: &'static str) -> Self {
        Self {
            workflow,
            channel,
            _value: PhantomData,
        }
    }

    /// The workflow's name.
    pub fn workflow(&self) -> &'static str {
        self.workflow
    }

    /// The channel's name.
    pub fn channel(&self) -> &'static str {
        self.channel
    }
}
