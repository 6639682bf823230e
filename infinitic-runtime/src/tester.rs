//! `WorkflowTester`: unit-test a workflow in-process, with no broker, no database and no
//! waiting.
//!
//! Service calls run at once on the implementations you register (real or fake); timers fire
//! at once, in order, moving the virtual workflow clock forward; chosen calls can be made to
//! fail. The result comes back with the full history, which replays to the same commands.

use infinitic_core::task::{TaskInfo, WithTask};
use infinitic_core::{
    encode, Applied, Command, CommandId, CommandRecord, Completion, DispatchError, Generation,
    History, HistoryEvent, Limits, MethodRun, ParkReason, Payload, Position, Progress, Service,
    Start, Status, StepOutcome, TaskError, Timestamp, Workflow, WorkflowCall, WorkflowDefinition,
    WorkflowFactory, WorkflowId, WorkflowInstance,
};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Runs workflows in-process with virtual time. See the crate docs of `infinitic` for an
/// example.
pub struct WorkflowTester {
    services: BTreeMap<&'static str, Arc<dyn Service>>,
    workflows: BTreeMap<String, Arc<dyn WorkflowDefinition>>,
    injected: Vec<Injection>,
    start: Timestamp,
    workflow_id: WorkflowId,
    shuffle: Option<u64>,
    limits: Limits,
}

impl std::fmt::Debug for WorkflowTester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowTester")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .field("workflows", &self.workflows.keys().collect::<Vec<_>>())
            .field("start", &self.start)
            .field("workflow_id", &self.workflow_id)
            .field("limits", &self.limits)
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
}

/// Why a tested run did not return a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TesterError {
    /// The call names a method the workflow lacks, or its arguments do not decode.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The call's arguments could not be encoded.
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
        self.services.insert(service.name(), Arc::new(service));
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

    /// Makes the next `times` calls of `service::method` end with `outcome` instead of running
    /// (for example `StepOutcome::TimedOut { attempts: 3 }`).
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

    /// Completes pending parallel service calls in a pseudo-random order drawn from `seed`
    /// (default: the order they were scheduled). Timers still fire in time order.
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
        let definition = WorkflowFactory::new(make);
        let input = call
            .encode_args(&self.limits)
            .map_err(|e| TesterError::BadCall(e.to_string()))?;
        let id = self.workflow_id.clone();
        let start = self.start;
        let (output, history, finished_at) = self
            .run_instance(&definition, id, call.method().to_string(), input)
            .await?;
        let output = self
            .limits
            .decode(&output)
            .map_err(|e| TesterError::BadResult(e.to_string()))?;
        Ok(TestRun {
            output,
            history,
            finished_at: finished_at.to_system_time(),
            elapsed: finished_at.saturating_duration_since(start),
        })
    }

    fn run_instance<'a>(
        &'a mut self,
        definition: &'a dyn WorkflowDefinition,
        id: WorkflowId,
        method: String,
        input: Payload,
    ) -> InstanceRun<'a> {
        Box::pin(async move {
            let mut history = History::new(
                id.clone(),
                definition.name(),
                method.clone(),
                input.clone(),
                self.start,
            );
            let (mut instance, progress) = WorkflowInstance::start_with_limits(
                definition,
                Start {
                    generation: Generation::FIRST,
                    workflow_id: id.clone(),
                    run: MethodRun(0),
                    method: &method,
                    input: &input,
                    at: self.start,
                },
                self.limits,
            )?;
            let mut now = self.start;
            let mut calls: VecDeque<CommandRecord> = VecDeque::new();
            let mut timers: BTreeMap<(Timestamp, Position), ()> = BTreeMap::new();
            let mut rng = self.shuffle.unwrap_or(0);
            let mut status = self.record(progress, &mut history, &mut calls, &mut timers);
            loop {
                match status {
                    Status::Completed(output) => return Ok((output, history, now)),
                    Status::Parked(reason) => {
                        return Err(TesterError::Parked {
                            reason,
                            history: Box::new(history),
                        })
                    }
                    Status::Running => {}
                }
                let (position, outcome) = if !calls.is_empty() {
                    let index = match self.shuffle {
                        Some(_) => {
                            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                            (rng >> 33) as usize % calls.len()
                        }
                        None => 0,
                    };
                    let record = calls.remove(index).expect("index is in bounds");
                    let outcome = self.execute(&id, &record, now).await?;
                    (record.position, outcome)
                } else if let Some(((fire_at, position), ())) = timers.pop_first() {
                    now = now.max(fire_at);
                    (
                        position,
                        StepOutcome::Completed(encode(&()).unwrap_or_default()),
                    )
                } else {
                    // The engine parks a run that waits with nothing pending, so this is only
                    // reachable if every pending step was abandoned and nothing else is due.
                    return Err(TesterError::Parked {
                        reason: ParkReason::NonDurableAwait,
                        history: Box::new(history),
                    });
                };
                let completion = Completion {
                    run: MethodRun(0),
                    position,
                    at: now,
                    outcome,
                };
                match instance.apply(completion.clone()) {
                    Ok(Applied::Progressed(progress)) => {
                        history.events.push(HistoryEvent::Completed(completion));
                        status = self.record(progress, &mut history, &mut calls, &mut timers);
                    }
                    // A select's loser finishing late: nothing to record.
                    Ok(Applied::Ignored(_)) => status = Status::Running,
                    Err(rejected) => {
                        unreachable!("the tester only completes commands it was given: {rejected}")
                    }
                }
            }
        })
    }

    fn record(
        &self,
        progress: Progress,
        history: &mut History,
        calls: &mut VecDeque<CommandRecord>,
        timers: &mut BTreeMap<(Timestamp, Position), ()>,
    ) -> Status {
        history.record_scheduled(&progress.commands);
        for record in progress.commands {
            match record.command {
                Command::StartTimer { fire_at } => {
                    timers.insert((fire_at, record.position), ());
                }
                Command::CallService { .. } | Command::StartChild { .. } => calls.push_back(record),
            }
        }
        progress.status
    }

    async fn execute(
        &mut self,
        parent: &WorkflowId,
        record: &CommandRecord,
        now: Timestamp,
    ) -> Result<StepOutcome, TesterError> {
        match &record.command {
            Command::CallService {
                service,
                method,
                args,
            } => {
                if let Some(injection) = self
                    .injected
                    .iter_mut()
                    .find(|i| i.remaining > 0 && i.service == *service && i.method == *method)
                {
                    injection.remaining -= 1;
                    return Ok(injection.outcome.clone());
                }
                let Some(implementation) = self.services.get(service.as_ref()) else {
                    return Ok(StepOutcome::Unknown {
                        reason: format!("no service named `{service}` is registered"),
                    });
                };
                // As a service worker does: arguments crossing the limits are not decoded.
                if let Err(e) = self.limits.check(args) {
                    return Ok(StepOutcome::Invalid {
                        reason: format!("arguments of {service}::{method} refused: {e}"),
                    });
                }
                let info = TaskInfo {
                    id: CommandId::new(parent.clone(), MethodRun(0), record.position),
                    attempt: 1,
                };
                let call = WithTask::new(info, implementation.dispatch(method, args))
                    .with_limits(self.limits);
                Ok(outcome_of(call.await))
            }
            Command::StartChild {
                workflow,
                method,
                args,
            } => {
                let Some(definition) = self.workflows.get(workflow.as_ref()).cloned() else {
                    return Ok(StepOutcome::Unknown {
                        reason: format!("no workflow named `{workflow}` is registered"),
                    });
                };
                // The runtime's id of this child (see `protocol::command`), so the child draws
                // the same `workflow::random()` and `uuid()` in tests as in production.
                let command = CommandId::new(parent.clone(), MethodRun(0), record.position);
                let child_id = WorkflowId::new(command.to_string());
                let saved_start = std::mem::replace(&mut self.start, now);
                let result = self
                    .run_instance(&*definition, child_id, method.to_string(), args.clone())
                    .await;
                self.start = saved_start;
                match result {
                    Ok((output, _, _)) => Ok(StepOutcome::Completed(output)),
                    // As on the runtime: an unknown method is `Unknown`, arguments that do not
                    // decode are `Invalid`.
                    Err(TesterError::Dispatch(e)) => Ok(e.into()),
                    Err(other) => Err(other),
                }
            }
            Command::StartTimer { .. } => unreachable!("timers are fired by the clock"),
        }
    }
}

/// A boxed (recursive: child workflows) run of one instance: its output, history and end time.
type InstanceRun<'a> =
    Pin<Box<dyn Future<Output = Result<(Payload, History, Timestamp), TesterError>> + 'a>>;

/// One attempt's result as the step outcome a workflow sees (the tester does not retry).
fn outcome_of(result: Result<Payload, TaskError>) -> StepOutcome {
    result.map_or_else(|error| error.into_outcome(1), StepOutcome::Completed)
}
