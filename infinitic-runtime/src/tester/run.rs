//! The tester's driver: the workers' code on the in-memory store and a virtual clock, one step
//! at a time (events due now, else one task due now, else the clock jumps to the next due
//! message).

use super::WorkflowTester;
use crate::clock::VirtualClock;
use crate::store::memory::MemoryStore;
use crate::store::{Delivery, Settlement, StateStore, StoreError, Transport};
use crate::worker::service::{self, TaskEnd};
use crate::worker::workflow::Stepper;
use crate::worker::WorkerConfig;
use infinitic_core::{Timestamp, WorkflowId};
use std::time::Duration;

/// One tested run: the workers' code on the in-memory store and the virtual clock.
pub(super) struct Run {
    pub(super) workflows: Stepper,
    pub(super) workflow_topics: Vec<String>,
    pub(super) store: MemoryStore,
    pub(super) clock: VirtualClock,
    pub(super) config: WorkerConfig,
    /// The completion-order seed's generator state, when one is set.
    pub(super) order: Option<u64>,
}

/// Workflow events taken per step (one commit), as a worker's batch.
const EVENTS_PER_STEP: usize = 256;

/// A lease long enough that nothing taken comes back while the run handles it.
const LEASE: Duration = Duration::from_secs(24 * 3600);

impl Run {
    pub(super) fn clock_now(&self) -> Timestamp {
        crate::clock::Clock::now(&self.clock)
    }

    /// Does the next thing: applies the workflow events due now, else runs one task due now,
    /// else moves the clock to the next due message. `false` once nothing is due now and
    /// instance `id` has ended, or nothing will ever be due.
    pub(super) async fn step(&mut self, id: &WorkflowId, tester: &mut WorkflowTester) -> bool {
        let events = memory(
            self.store
                .receive(&self.workflow_topics, EVENTS_PER_STEP, LEASE)
                .await,
        );
        if !events.deliveries.is_empty() {
            memory(self.workflows.step(&self.store, events.deliveries).await);
            return true;
        }
        let tasks = memory(
            self.store
                .receive(&tester.service_topics(), usize::MAX, LEASE)
                .await,
        );
        if self.run_one_task(tester, tasks.deliveries).await {
            return true;
        }
        // Once the tested instance has ended, what is due at its end still runs (calls and
        // children it dispatched and did not await), but the clock stops.
        let state = memory(self.store.load(id, false).await).map(|w| w.state);
        if state.is_some_and(|s| s.is_final()) {
            return false;
        }
        match [events.next_visible_at, tasks.next_visible_at]
            .into_iter()
            .flatten()
            .min()
        {
            Some(next) => {
                self.clock.advance_to(next);
                true
            }
            None => false,
        }
    }

    /// Runs one of the tasks taken (in publish order, or the seed's) and gives the others
    /// back; `false` if none can run here.
    async fn run_one_task(
        &mut self,
        tester: &mut WorkflowTester,
        mut tasks: Vec<Delivery>,
    ) -> bool {
        tasks.sort_by_key(|t| t.id);
        let mut runnable = Vec::new();
        let mut back = Vec::new();
        for delivery in tasks {
            match service::decode(&delivery, &self.config.limits) {
                Err(reason) => {
                    let end = TaskEnd::DeadLetter {
                        delivery: delivery.id,
                        reason,
                    };
                    runnable.push((delivery, Err(end)));
                }
                Ok(task) => {
                    let served = tester.services.contains_key(&task.service)
                        || tester.injected.iter().any(|i| {
                            i.remaining > 0 && i.service == task.service && i.method == task.method
                        });
                    if served {
                        runnable.push((delivery, Ok(task)));
                    } else {
                        back.push(delivery);
                    }
                }
            }
        }
        let chosen = match (runnable.len(), &mut self.order) {
            (0, _) => None,
            (n, Some(state)) => {
                *state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                Some(runnable.remove((*state >> 33) as usize % n))
            }
            (_, None) => Some(runnable.remove(0)),
        };
        back.extend(runnable.into_iter().map(|(delivery, _)| delivery));
        let now = self.clock_now();
        let release = back
            .into_iter()
            .map(|d| Settlement::Retry {
                delivery: d.id,
                at: now,
            })
            .collect();
        memory(self.store.settle(release).await);
        let Some((_, task)) = chosen else {
            return false;
        };
        let end: TaskEnd = match task {
            Err(end) => end,
            Ok(task) => match tester.take_injection(&task.service, &task.method) {
                Some(outcome) => task.reply(outcome, now, None),
                None => task.run(&tester.services, &self.config).await,
            },
        };
        service::report(&self.store, None, end).await;
        true
    }
}

/// The in-memory store does not fail: a failure here is a bug of the tester.
pub(super) fn memory<T>(result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|error| panic!("the in-memory store failed: {error}"))
}
