//! Parallel composition over branches of different types: [`join`] waits for all of them,
//! [`race`] for the first. A branch is anything awaitable in a workflow (a service call, a
//! child workflow, a timer, a dispatched call, an `async` block of durable steps), given as a
//! tuple of 2 to 8.
//!
//! Branches are polled in tuple order, so the commands they schedule get the same positions on
//! every replay whatever order their results arrive in; `race` resolves to the branch whose
//! result was applied first (recorded in history), the lowest index when several are ready at
//! one poll.

use serde::{Deserialize, Serialize};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs the branches in parallel and resolves to all their outputs, as a tuple in the same
/// order.
///
/// ```no_run
/// # use infinitic_core::{workflow, ServiceCall, WorkflowCall};
/// # use std::time::Duration;
/// # async fn demo(price: ServiceCall<u64>, name: ServiceCall<String>, audit: WorkflowCall<bool>) {
/// let (price, name, audited, ()) = workflow::join((
///     price,
///     name,
///     audit,
///     workflow::sleep(Duration::from_secs(1)),
/// ))
/// .await;
/// # }
/// ```
pub fn join<B: Branches>(branches: B) -> B::Join {
    branches.join()
}

/// Runs the branches in parallel and resolves to the first to finish, as a [`OneOf2`] …
/// [`OneOf8`] naming the branch. The others are dropped: their late results are ignored.
///
/// ```no_run
/// # use infinitic_core::{workflow, workflow::OneOf3, ServiceCall};
/// # use std::time::Duration;
/// # async fn demo(card: ServiceCall<u64>, wallet: ServiceCall<String>) {
/// match workflow::race((card, wallet, workflow::sleep(Duration::from_secs(30)))).await {
///     OneOf3::First(paid) => { /* the card answered first */ }
///     OneOf3::Second(receipt) => { /* the wallet did */ }
///     OneOf3::Third(()) => { /* neither within 30 s */ }
/// }
/// # }
/// ```
pub fn race<B: Branches>(branches: B) -> B::Race {
    branches.race()
}

/// A tuple of 2 to 8 branches for [`join`] and [`race`].
pub trait Branches {
    /// The future of [`join`].
    type Join: Future;
    /// The future of [`race`].
    type Race: Future;
    /// See [`join`].
    fn join(self) -> Self::Join;
    /// See [`race`].
    fn race(self) -> Self::Race;
}

/// One branch of a join: running, or done with its output kept until all are.
enum Branch<F: Future> {
    Running(Pin<Box<F>>),
    Done(Option<F::Output>),
}

impl<F: Future> Branch<F> {
    fn new(future: F) -> Self {
        Branch::Running(Box::pin(future))
    }

    /// Polls a running branch; true once it is done.
    fn poll_done(&mut self, cx: &mut Context<'_>) -> bool {
        if let Branch::Running(future) = self {
            match future.as_mut().poll(cx) {
                Poll::Ready(output) => *self = Branch::Done(Some(output)),
                Poll::Pending => return false,
            }
        }
        true
    }

    fn take(&mut self) -> F::Output {
        match self {
            Branch::Done(output) => output.take().expect("a joined output is taken once"),
            Branch::Running(_) => unreachable!("taken only once every branch is done"),
        }
    }
}

macro_rules! branches {
    ($join:ident, $race:ident, $one_of:ident, $n:literal; $($T:ident $variant:ident $i:tt),+) => {
        #[doc = concat!("Future of [`join`] over ", $n, " branches.")]
        #[must_use = "futures do nothing unless awaited"]
        pub struct $join<$($T: Future),+> {
            branches: ($(Branch<$T>,)+),
        }

        // Branches are boxed and outputs never pinned: moving the join is fine.
        impl<$($T: Future),+> Unpin for $join<$($T),+> {}

        impl<$($T: Future),+> std::fmt::Debug for $join<$($T),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($join))
            }
        }

        impl<$($T: Future),+> Future for $join<$($T),+> {
            type Output = ($($T::Output,)+);

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let this = self.get_mut();
                let mut all_done = true;
                $(all_done &= this.branches.$i.poll_done(cx);)+
                if !all_done {
                    return Poll::Pending;
                }
                Poll::Ready(($(this.branches.$i.take(),)+))
            }
        }

        #[doc = concat!("Future of [`race`] over ", $n, " branches.")]
        #[must_use = "futures do nothing unless awaited"]
        pub struct $race<$($T: Future),+> {
            branches: ($(Pin<Box<$T>>,)+),
        }

        impl<$($T: Future),+> std::fmt::Debug for $race<$($T),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($race))
            }
        }

        impl<$($T: Future),+> Future for $race<$($T),+> {
            type Output = $one_of<$($T::Output),+>;

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let this = self.get_mut();
                $(
                    if let Poll::Ready(output) = this.branches.$i.as_mut().poll(cx) {
                        return Poll::Ready($one_of::$variant(output));
                    }
                )+
                Poll::Pending
            }
        }

        #[doc = concat!("Which of ", $n, " raced branches finished first, with its output \
            (see [`race`]). Serializable, so a workflow can return it.")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $one_of<$($T),+> {
            $(
                #[doc = concat!("Branch ", stringify!($i), " of the tuple finished first.")]
                $variant($T),
            )+
        }

        impl<$($T: IntoFuture),+> Branches for ($($T,)+) {
            type Join = $join<$($T::IntoFuture),+>;
            type Race = $race<$($T::IntoFuture),+>;

            fn join(self) -> Self::Join {
                $join {
                    branches: ($(Branch::new(self.$i.into_future()),)+),
                }
            }

            fn race(self) -> Self::Race {
                $race {
                    branches: ($(Box::pin(self.$i.into_future()),)+),
                }
            }
        }
    };
}

branches!(Join2, Race2, OneOf2, 2; A First 0, B Second 1);
branches!(Join3, Race3, OneOf3, 3; A First 0, B Second 1, C Third 2);
branches!(Join4, Race4, OneOf4, 4; A First 0, B Second 1, C Third 2, D Fourth 3);
branches!(Join5, Race5, OneOf5, 5; A First 0, B Second 1, C Third 2, D Fourth 3, E Fifth 4);
branches!(Join6, Race6, OneOf6, 6;
    A First 0, B Second 1, C Third 2, D Fourth 3, E Fifth 4, F Sixth 5);
branches!(Join7, Race7, OneOf7, 7;
    A First 0, B Second 1, C Third 2, D Fourth 3, E Fifth 4, F Sixth 5, G Seventh 6);
branches!(Join8, Race8, OneOf8, 8;
    A First 0, B Second 1, C Third 2, D Fourth 3, E Fifth 4, F Sixth 5, G Seventh 6, H Eighth 7);
