//! `WorkflowTester`: unit-test a workflow in-process, with no broker, no database and no
//! waiting.
//!
//! It runs the runtime's own code: the workflow worker's instance handling and the service
//! worker's task handling, over the in-memory store, on a virtual clock shared by the workflow
//! and all its children. Ids, timers, retries, dead letters and parks are the runtime's. The
//! clock jumps to the next due message whenever nothing is due now, so a year of monthly
//! timers runs in milliseconds. Your services run on the implementations you register (real
//! or fake); chosen calls can be made to end with a given outcome. The result comes back with
//! the full history, which replays to the same commands.

mod run;

use crate::client::{Client, ClientError};
use crate::clock::VirtualClock;
use crate::status::{describe, Description};
use crate::store::memory::MemoryStore;
use crate::store::{DeadLetter, StateStore, Transport};
use crate::topics;
use crate::worker::workflow::Stepper;
use crate::worker::WorkerConfig;
use infinitic_core::{
    encode, replay_with_limits, ChannelRef, DispatchError, Generation, History, Limits, MethodRun,
    ParkReason, Payload, RetryPolicy, Service, Start, Status, StepOutcome, Timestamp, Workflow,
    WorkflowCall, WorkflowDefinition, WorkflowFactory, WorkflowId, WorkflowInstance,
};
use run::{memory, Run};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Runs workflows in-process with virtual time, on the runtime's own worker code. See the
/// crate docs of `infinitic` for an example. [`WorkflowTester::run`] needs a tokio runtime
/// (`#[tokio::test]`, or `#[tokio::main]`).
pub struct WorkflowTester {
    services: BTreeMap<String, Arc<dyn Service>>,
    workflows: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    injected: Vec<Injection>,
    start: Timestamp,
    workflow_id: WorkflowId,
    shuffle: Option<u64>,
    limits: Limits,
    retry: RetryPolicy,
    signals: Vec<PlannedSignal>,
}

/// A signal the tester sends to the tested instance at a virtual time.
#[derive(Debug, Clone)]
struct PlannedSignal {
    after: Duration,
    workflow: &'static str,
    channel: &'static str,
    value: Result<Payload, String>,
}

impl std::fmt::Debug for WorkflowTester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowTester")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .field("workflows", &self.workflows.keys().collect::<Vec<_>>())
            .field("start", &self.start)
            .field("workflow_id", &self.workflow_id)
            .field("limits", &self.limits)
            .field("retry", &self.retry)
            .finish()
    }
}

/// A replacement outcome for the next calls of one service method.
#[derive(Debug, Clone)]
struct Injection {
    service: String,
    method: String,
    outcome: StepOutcome,
    remaining: usize,
}

/// The result of a tested run.
#[derive(Debug, Clone)]
pub struct TestRun<R> {
    /// What the workflow returned.
    pub output: R,
    /// Its full history (commands and completions, in order).
    pub history: History,
    /// The virtual workflow clock when it returned.
    pub finished_at: SystemTime,
    /// Virtual time from start to finish.
    pub elapsed: Duration,
    /// Messages set aside during the run, with their reasons (a service's result that could
    /// not be encoded, arguments over the limits, ...), oldest first.
    pub dead_letters: Vec<DeadLetter>,
}

/// Why a tested run did not return a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TesterError {
    /// The call names a method the workflow lacks, or its arguments do not decode.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The call's arguments could not be encoded, or cross the limits.
    #[error("the workflow call's arguments cannot be encoded: {0}")]
    BadCall(String),
    /// The run was parked (panic, non-durable await, ...); `history` shows how far it got.
    #[error("the workflow was parked: {reason}")]
    Parked {
        /// Why.
        reason: ParkReason,
        /// The history up to that point.
        history: Box<History>,
    },
    /// The workflow waits and nothing it waits on can ever come: a call to a service no one
    /// serves here, a child workflow that is not registered, a child that is parked. On a
    /// runtime it would wait (visibly, with this same description) until a worker or a fix
    /// comes.
    #[error("the workflow waits with nothing due: {description}")]
    Waiting {
        /// Its status: what it waits on, children with their state.
        description: Box<Description>,
        /// The history so far.
        history: Box<History>,
    },
    /// The return value did not decode as the expected type.
    #[error("the workflow's result cannot be decoded: {0}")]
    BadResult(String),
}

impl Default for WorkflowTester {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkflowTester {
    /// A tester with no services, starting at 2026-01-01T00:00:00Z, instance id `"test"`.
    pub fn new() -> Self {
        crate::logging::install_panic_hook();
        Self {
            services: BTreeMap::new(),
            workflows: BTreeMap::new(),
            injected: Vec::new(),
            start: Timestamp::from_millis(1_767_225_600_000),
            workflow_id: WorkflowId::new("test"),
            shuffle: None,
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            signals: Vec::new(),
        }
    }

    /// Sets the payload limits, as a worker's `WorkerConfig::limits` does: the call's
    /// arguments, step arguments and results, and the workflow's output must stay within them.
    ///
    /// ```
    /// use infinitic_core::Limits;
    /// use infinitic_runtime::tester::WorkflowTester;
    /// let tester = WorkflowTester::new().limits(Limits { max_depth: 32, ..Limits::default() });
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Registers a service implementation (a generated `…Dispatcher`).
    pub fn service(mut self, service: impl Service) -> Self {
        self.services
            .insert(service.name().to_string(), Arc::new(service));
        self
    }

    /// Registers a workflow that the tested workflow may start as a child.
    pub fn child_workflow<W: Workflow>(
        mut self,
        make: impl Fn() -> W + Send + Sync + 'static,
    ) -> Self {
        self.workflows
            .insert(W::NAME.to_string(), Arc::new(WorkflowFactory::new(make)));
        self
    }

    /// Sets the retry policy of failed and timed-out service calls, as a worker's
    /// `WorkerConfig::retry` does (default: [`RetryPolicy::default`]). Retries wait on the
    /// virtual clock.
    ///
    /// ```
    /// use infinitic_core::RetryPolicy;
    /// use infinitic_runtime::tester::WorkflowTester;
    /// let tester = WorkflowTester::new().retry(RetryPolicy { max_attempts: 1, ..RetryPolicy::default() });
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sends `value` to channel `channel` of the tested instance `after` its start (virtual
    /// time), as a client's `signal` would.
    ///
    /// ```no_run
    /// # use infinitic_core::ChannelRef;
    /// # use infinitic_runtime::tester::WorkflowTester;
    /// # fn demo(unsubscribe: ChannelRef<String>) {
    /// let day = std::time::Duration::from_secs(86_400);
    /// let tester = WorkflowTester::new().signal(45 * day, unsubscribe, "moving".to_string());
    /// # }
    /// ```
    pub fn signal<T: serde::Serialize>(
        mut self,
        after: Duration,
        channel: ChannelRef<T>,
        value: T,
    ) -> Self {
        let value = self.limits.encode(&value).map_err(|e| e.to_string());
        self.signals.push(PlannedSignal {
            after,
            workflow: channel.workflow(),
            channel: channel.channel(),
            value,
        });
        self
    }

    /// Sets the virtual clock's start.
    pub fn starting_at(mut self, start: SystemTime) -> Self {
        self.start = Timestamp::from(start);
        self
    }

    /// Sets the instance id (it seeds `workflow::random()` and `workflow::uuid()`).
    pub fn with_id(mut self, id: impl Into<WorkflowId>) -> Self {
        self.workflow_id = id.into();
        self
    }

    /// Makes the next `times` calls of `service::method` end with `outcome` instead of running,
    /// as if the retry policy had already ended them so (for example
    /// `StepOutcome::TimedOut { attempts: 3 }`). The service need not be registered.
    pub fn inject(
        mut self,
        service: &str,
        method: &str,
        outcome: StepOutcome,
        times: usize,
    ) -> Self {
        self.injected.push(Injection {
            service: service.to_string(),
            method: method.to_string(),
            outcome,
            remaining: times,
        });
        self
    }

    /// Makes the next call of `service::method` fail with the service's own `error`, as if the
    /// retry policy had given up.
    pub fn fail_next<E: serde::Serialize + std::fmt::Debug>(
        self,
        service: &str,
        method: &str,
        error: E,
    ) -> Self {
        let outcome = match encode(&error) {
            Ok(bytes) => StepOutcome::Failed {
                error: bytes,
                message: format!("{error:?}"),
                attempts: 1,
            },
            Err(e) => StepOutcome::Invalid {
                reason: format!("injected error cannot be encoded: {e}"),
            },
        };
        self.inject(service, method, outcome, 1)
    }

    /// Runs service calls that are due together in a pseudo-random order drawn from `seed`
    /// (default: the order they were scheduled), one at a time, each outcome applied before
    /// the next call runs. Timers still fire in time order.
    pub fn completion_order_seed(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }

    /// Runs `call` on a fresh implementation from `make` until it returns.
    pub async fn run<W: Workflow, R: DeserializeOwned>(
        mut self,
        make: impl Fn() -> W + Send + Sync + 'static,
        call: WorkflowCall<R>,
    ) -> Result<TestRun<R>, TesterError> {
        if call.workflow() != W::NAME {
            return Err(TesterError::BadCall(format!(
                "the call is for workflow `{}`, the tester runs `{}`",
                call.workflow(),
                W::NAME
            )));
        }
        let definition: Arc<dyn WorkflowDefinition> = Arc::new(WorkflowFactory::new(make));
        self.workflows
            .insert(W::NAME.to_string(), Arc::clone(&definition));
        let clock = VirtualClock::starting_at(self.start);
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        let config = WorkerConfig {
            retry: self.retry.clone(),
            limits: self.limits,
            clock: Arc::new(clock.clone()),
            ..WorkerConfig::default()
        };
        let id = self.workflow_id.clone();
        Client::new(store.clone())
            .with_clock(Arc::clone(&config.clock))
            .with_limits(self.limits)
            .dispatch_with_id(id.clone(), call)
            .await
            .map_err(|error| match error {
                ClientError::BadCall(reason) => TesterError::BadCall(reason),
                other => TesterError::BadCall(other.to_string()),
            })?;
        let mut planned = Vec::new();
        for (n, signal) in self.signals.iter().enumerate() {
            let value = signal.value.clone().map_err(TesterError::BadCall)?;
            let at = self.start + signal.after;
            let id_of_signal = format!("tester-{n}");
            planned.push(crate::protocol::signal(
                signal.workflow,
                &id,
                signal.channel,
                value,
                &id_of_signal,
                at,
            ));
        }
        memory(store.publish(planned).await);
        let mut run = Run {
            workflows: Stepper::new(self.workflows.clone(), &config),
            workflow_topics: self.workflows.keys().map(|w| topics::workflow(w)).collect(),
            store,
            clock,
            config,
            order: self.shuffle,
        };
        while run.step(&id, &mut self).await {}
        self.outcome(&run, &*definition, &id).await
    }

    /// The stored outcome of instance `id` after `run` stopped.
    async fn outcome<R: DeserializeOwned>(
        &self,
        run: &Run,
        definition: &dyn WorkflowDefinition,
        id: &WorkflowId,
    ) -> Result<TestRun<R>, TesterError> {
        let stored = memory(run.store.load(id, true).await)
            .expect("the client stored the instance before the run");
        let history = History {
            workflow_id: id.clone(),
            generation: stored.header.generation,
            workflow: stored.header.workflow,
            method: stored.header.method,
            input: stored.header.input,
            started_at: stored.header.started_at,
            events: stored.history,
        };
        match stored.state {
            crate::store::WorkflowState::Completed(output) => {
                let output = self
                    .limits
                    .decode(&output)
                    .map_err(|e| TesterError::BadResult(e.to_string()))?;
                let finished_at = run.clock_now();
                Ok(TestRun {
                    output,
                    history,
                    finished_at: finished_at.to_system_time(),
                    elapsed: finished_at.saturating_duration_since(self.start),
                    dead_letters: memory(run.store.dead_letters(usize::MAX).await),
                })
            }
            crate::store::WorkflowState::Parked(stored_reason) => {
                // The worker stores the reason as text: replaying the history, as a worker
                // would on a retry, gives it back with its structure.
                let reason = match replay_with_limits(definition, &history, self.limits) {
                    Ok(replay) => match replay.status {
                        Status::Parked(reason) => reason,
                        _ => ParkReason::Panicked {
                            message: stored_reason,
                        },
                    },
                    Err(error) => return Err(TesterError::Dispatch(error)),
                };
                Err(TesterError::Parked {
                    reason,
                    history: Box::new(history),
                })
            }
            crate::store::WorkflowState::Failed(reason) => {
                // The start was refused: the same check, with its structure.
                let started = WorkflowInstance::start_with_limits(
                    definition,
                    Start {
                        workflow_id: id.clone(),
                        generation: Generation::FIRST,
                        run: MethodRun(0),
                        method: &history.method,
                        input: &history.input,
                        at: history.started_at,
                    },
                    self.limits,
                );
                Err(match started {
                    Err(error) => TesterError::Dispatch(error),
                    Ok(_) => TesterError::BadCall(reason),
                })
            }
            crate::store::WorkflowState::Pending | crate::store::WorkflowState::Running => {
                let description =
                    memory(describe(&run.store, id).await).expect("the instance is stored");
                Err(TesterError::Waiting {
                    description: Box::new(description),
                    history: Box::new(history),
                })
            }
        }
    }

    /// The topics of services that can run here: registered, or with an injected outcome left.
    fn service_topics(&self) -> Vec<String> {
        let injected = self
            .injected
            .iter()
            .filter(|i| i.remaining > 0)
            .map(|i| i.service.as_str());
        let mut names: Vec<&str> = self.services.keys().map(String::as_str).collect();
        names.extend(injected);
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(topics::service).collect()
    }

    /// Takes the injected outcome for the next call of `service::method`, if one is left.
    fn take_injection(&mut self, service: &str, method: &str) -> Option<StepOutcome> {
        let injection = self
            .injected
            .iter_mut()
            .find(|i| i.remaining > 0 && i.service == service && i.method == method)?;
        injection.remaining -= 1;
        Some(injection.outcome.clone())
    }
}
