//! Properties of the replay core, with workflows written through the real macros.
//!
//! One interpreter workflow (`Interp`) runs a generated script of durable operations (service
//! calls, timers, child workflows, `join_all`, `select`, a timer followed by a call) and of
//! deterministic values (`random`, `uuid`, `now`). The tests drive `WorkflowInstance` directly
//! and choose which pending command completes next, so every delivery order a broker could
//! produce is reachable; proptest shrinks a failure to a short script and order.
//!
//! Lines marked `@loc:NAME;` are where the interpreter creates each kind of command: the
//! non-determinism tests check that a mismatch's location points at them.

use infinitic::prelude::*;
use infinitic::{
    encode, replay, Applied, Command, CommandRecord, CommandSignature, Completion, History,
    HistoryEvent, IgnoredReason, MethodRun, Mismatch, ParkReason, Position, Progress,
    RejectedEvent, Start, Status, StepOutcome, Timestamp, WorkflowDefinition, WorkflowId,
    WorkflowInstance,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

// ------------------------------------------------------------------------------------------
// The workflow under test
// ------------------------------------------------------------------------------------------

#[service]
pub trait Calc {
    async fn square(&self, x: u64) -> u64;
    async fn add(&self, a: u64, b: u64) -> u64;
}

#[service]
pub trait Store {
    async fn put(&self, key: String, value: u64) -> Result<u64, String>;
}

#[workflow]
pub trait Child {
    async fn run(&self, x: u64) -> u64;
}

#[workflow]
pub trait Script {
    async fn run(&self, tag: String) -> Vec<String>;
}

/// A durable operation with one result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// `Calc::square`.
    Square(u64),
    /// `Calc::add`.
    Add(u64, u64),
    /// `Store::put` (a method returning `Result`).
    Put(u64),
    /// A durable timer of this many seconds.
    Sleep(u64),
    /// The child workflow `Child::run`.
    Child(u64),
    /// A timer, then a `Calc::square` call created only once the timer has fired.
    SleepThen(u64, u64),
}

/// One statement of a script; each appends one line to the workflow's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Step(Leaf),
    Join(Vec<Leaf>),
    /// Never empty.
    Select(Vec<Leaf>),
    Random,
    Uuid,
    Now,
    /// The workflow code panics.
    Panic,
    /// The workflow awaits something that is not durable.
    Stuck,
    /// An inline step (`workflow::inline`): its value is the script position times 7, and
    /// each run of its closure is counted (see [`inline_runs`]).
    Inline,
}

thread_local! {
    /// Runs of inline steps' closures on this thread (proptest runs a case on one thread).
    static INLINE_RUNS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The value of the inline step at script position `index`, counting the run.
fn inline_value(index: usize) -> u64 {
    INLINE_RUNS.with(|runs| runs.set(runs.get() + 1));
    index as u64 * 7
}

/// How many times inline steps' closures have run on this thread.
fn inline_runs() -> u64 {
    INLINE_RUNS.with(std::cell::Cell::get)
}

/// Interprets its script: the script plays the role of the workflow's code, so two scripts
/// are two versions of one workflow.
#[derive(Default)]
pub struct Interp {
    script: Vec<Op>,
    calc: CalcStub,
    store: StoreStub,
    child: ChildStub,
}

type Branch<'a> = Pin<Box<dyn Future<Output = String> + Send + 'a>>;

#[workflow]
impl Script for Interp {
    async fn run(&self, tag: String) -> Vec<String> {
        let mut log = vec![tag];
        for (index, op) in self.script.iter().enumerate() {
            let line = match op {
                Op::Step(leaf) => self.leaf(leaf).await,
                Op::Join(leaves) => {
                    let outputs = workflow::join_all(leaves.iter().map(|l| self.leaf(l))).await;
                    format!("join {outputs:?}")
                }
                Op::Select(leaves) => {
                    let (index, output) =
                        workflow::select(leaves.iter().map(|l| self.leaf(l))).await;
                    format!("select {index} {output}")
                }
                Op::Random => format!(
                    "random {} {}",
                    workflow::random(),
                    workflow::random_range(10..20)
                ),
                Op::Uuid => format!("uuid {}", workflow::uuid()),
                Op::Now => format!("now {}", Timestamp::from(workflow::now()).as_millis()),
                Op::Panic => panic!("scripted panic after {} lines", log.len()),
                Op::Stuck => {
                    std::future::pending::<()>().await;
                    "unreachable".to_string()
                }
                Op::Inline => {
                    let value: u64 = workflow::inline(|| inline_value(index)); // @loc:inline;
                    format!("inline {value}")
                }
            };
            log.push(line);
        }
        log
    }
}

impl Interp {
    fn leaf(&self, leaf: &Leaf) -> Branch<'_> {
        match *leaf {
            Leaf::Square(x) => {
                let call = self.calc.square(x); // @loc:square;
                Box::pin(async move { show("square", call.await) })
            }
            Leaf::Add(a, b) => {
                let call = self.calc.add(a, b); // @loc:add;
                Box::pin(async move { show("add", call.await) })
            }
            Leaf::Put(v) => {
                let call = self.store.put(format!("k{v}"), v); // @loc:put;
                Box::pin(async move { show("put", call.await) })
            }
            Leaf::Sleep(secs) => {
                let timer = workflow::sleep(Duration::from_secs(secs)); // @loc:sleep;
                Box::pin(async move {
                    timer.await;
                    "slept".to_string()
                })
            }
            Leaf::Child(x) => {
                let call = self.child.run(x); // @loc:child;
                Box::pin(async move { show("child", call.await) })
            }
            Leaf::SleepThen(secs, x) => {
                let timer = workflow::sleep(Duration::from_secs(secs)); // @loc:then-sleep;
                Box::pin(async move {
                    timer.await;
                    let call = self.calc.square(x); // @loc:then-square;
                    show("square", call.await)
                })
            }
        }
    }
}

fn show<T: Debug, E: Debug>(name: &str, result: Result<T, StepError<E>>) -> String {
    format!("{name} {result:?}")
}

// ------------------------------------------------------------------------------------------
// A model of the script: commands, signatures, outputs
// ------------------------------------------------------------------------------------------

fn call_service<A: serde::Serialize>(
    service: &'static str,
    method: &'static str,
    args: &A,
) -> Command {
    Command::CallService {
        service: service.into(),
        method: method.into(),
        args: encode(args).unwrap(),
    }
}

fn start_child<A: serde::Serialize>(
    workflow: &'static str,
    method: &'static str,
    args: &A,
) -> Command {
    Command::StartChild {
        workflow: workflow.into(),
        method: method.into(),
        args: encode(args).unwrap(),
    }
}

fn calc(method: &str) -> CommandSignature {
    CommandSignature::CallService {
        service: "Calc".into(),
        method: method.into(),
    }
}

impl Leaf {
    /// The commands this leaf creates, in order: signature and source marker.
    fn commands(&self) -> Vec<(CommandSignature, &'static str)> {
        match self {
            Leaf::Square(_) => vec![(calc("square"), "square")],
            Leaf::Add(..) => vec![(calc("add"), "add")],
            Leaf::Put(_) => vec![(
                CommandSignature::CallService {
                    service: "Store".into(),
                    method: "put".into(),
                },
                "put",
            )],
            Leaf::Sleep(_) => vec![(CommandSignature::StartTimer, "sleep")],
            Leaf::Child(_) => vec![(
                CommandSignature::StartChild {
                    workflow: "Child".into(),
                    method: "run".into(),
                },
                "child",
            )],
            Leaf::SleepThen(..) => vec![
                (CommandSignature::StartTimer, "then-sleep"),
                (calc("square"), "then-square"),
            ],
        }
    }

    /// The line this leaf contributes, given how the test driver completes commands.
    fn text(&self) -> String {
        fn typed<T: DeserializeOwned, E: DeserializeOwned>(c: Command) -> Result<T, StepError<E>> {
            outcome_for(&c).into_typed()
        }
        match *self {
            Leaf::Square(x) | Leaf::SleepThen(_, x) => show(
                "square",
                typed::<u64, NoError>(call_service("Calc", "square", &(x,))),
            ),
            Leaf::Add(a, b) => show(
                "add",
                typed::<u64, NoError>(call_service("Calc", "add", &(a, b))),
            ),
            Leaf::Put(v) => show(
                "put",
                typed::<u64, String>(call_service("Store", "put", &(format!("k{v}"), v))),
            ),
            Leaf::Sleep(_) => "slept".to_string(),
            Leaf::Child(x) => show(
                "child",
                typed::<u64, NoError>(start_child("Child", "run", &(x,))),
            ),
        }
    }
}

impl Op {
    fn commands(&self) -> Vec<(CommandSignature, &'static str)> {
        match self {
            Op::Step(leaf) => leaf.commands(),
            Op::Join(leaves) | Op::Select(leaves) => {
                leaves.iter().flat_map(Leaf::commands).collect()
            }
            Op::Random | Op::Uuid | Op::Now | Op::Panic | Op::Stuck => Vec::new(),
            Op::Inline => vec![(CommandSignature::Inline, "inline")],
        }
    }
}

/// The signature and source marker at each position, for scripts whose commands are created
/// one at a time (so positions follow the script's order).
fn sequential_commands(script: &[Op]) -> Vec<(CommandSignature, &'static str)> {
    script.iter().flat_map(Op::commands).collect()
}

/// The positions each statement's commands get: statements run one after the other, so each
/// takes the next contiguous range.
fn position_ranges(script: &[Op]) -> Vec<(&Op, std::ops::Range<Position>)> {
    let mut next = 0;
    script
        .iter()
        .map(|op| {
            let start = next;
            next += op.commands().len() as Position;
            (op, start..next)
        })
        .collect()
}

/// The model's select losers: the branches of every decided select but its winner.
fn select_losers(script: &[Op], delivered: &[Position]) -> Vec<Position> {
    position_ranges(script)
        .into_iter()
        .filter(|(op, range)| {
            matches!(op, Op::Select(_)) && range.clone().any(|p| delivered.contains(&p))
        })
        .flat_map(|(_, range)| range.filter(|p| !delivered.contains(p)))
        .collect()
}

/// In a completed run, every command was completed exactly once, except select losers:
/// one branch of each select was completed, and nothing is left pending.
fn check_deliveries(script: &[Op], live: &Live) -> Result<(), TestCaseError> {
    let delivered: BTreeSet<Position> = live.delivered.iter().copied().collect();
    prop_assert_eq!(delivered.len(), live.delivered.len(), "completed twice");
    for (op, range) in position_ranges(script) {
        let completed = range.clone().filter(|p| delivered.contains(p)).count();
        match op {
            Op::Select(_) => prop_assert_eq!(completed, 1, "{:?} at {:?}", op, range),
            // Complete as recorded: nothing to deliver.
            Op::Inline => prop_assert_eq!(completed, 0, "{:?} at {:?}", op, range),
            _ => prop_assert_eq!(completed, range.len(), "{:?} at {:?}", op, range),
        }
    }
    prop_assert_eq!(pending_of(&live.instance), Vec::<Position>::new());
    Ok(())
}

/// `file:line:` of the line carrying `@loc:{marker};`.
fn location_of(marker: &str) -> String {
    let tag = format!("@loc:{marker};");
    let lines: Vec<usize> = include_str!("replay_properties.rs")
        .lines()
        .enumerate()
        .filter(|(_, text)| text.contains(&tag) && !text.contains("@loc:{"))
        .map(|(index, _)| index + 1)
        .collect();
    assert_eq!(lines.len(), 1, "one line is marked {tag}");
    format!("{}:{}:", file!(), lines[0])
}

/// Expected output of a `parallel_script` (no `Now`, `Panic` or `Stuck`; one command per
/// select branch) whose completions were applied in `delivered` order. Random and uuid lines
/// do not depend on the order: they are taken from `reference`, another run's output.
fn expected_output(script: &[Op], reference: &[String], delivered: &[Position]) -> Vec<String> {
    let rank = |position: usize| {
        delivered
            .iter()
            .position(|&p| p as usize == position)
            .unwrap_or(usize::MAX)
    };
    let mut next_position = 0;
    let mut lines = vec![reference[0].clone()];
    for (index, op) in script.iter().enumerate() {
        lines.push(match op {
            Op::Step(leaf) => leaf.text(),
            Op::Join(leaves) => format!(
                "join {:?}",
                leaves.iter().map(Leaf::text).collect::<Vec<_>>()
            ),
            Op::Select(leaves) => {
                // The first branch whose completion was applied wins.
                let winner = (0..leaves.len())
                    .min_by_key(|j| rank(next_position + j))
                    .unwrap();
                format!("select {winner} {}", leaves[winner].text())
            }
            Op::Random | Op::Uuid => reference[index + 1].clone(),
            Op::Inline => format!("inline {}", index * 7),
            Op::Now | Op::Panic | Op::Stuck => unreachable!("not in order-independent scripts"),
        });
        next_position += op.commands().len();
    }
    lines
}

// ------------------------------------------------------------------------------------------
// The driver: a live (sticky) instance fed completions in a chosen order
// ------------------------------------------------------------------------------------------

const START_MILLIS: u64 = 1_767_225_600_000;

fn definition(script: &[Op]) -> impl WorkflowDefinition {
    let script = script.to_vec();
    WorkflowFactory::new(move || Interp {
        script: script.clone(),
        ..Interp::default()
    })
}

/// How the driver completes a command: a function of the command alone (never of the
/// order), including failures of every kind.
fn outcome_for(command: &Command) -> StepOutcome {
    match command {
        Command::Inline { .. } | Command::Receive { .. } | Command::SendSignal { .. } => {
            unreachable!("these scripts complete no {command:?}")
        }
        Command::StartTimer { .. } => StepOutcome::Completed(encode(&()).unwrap()),
        Command::CallService {
            service: target,
            method,
            args,
        }
        | Command::StartChild {
            workflow: target,
            method,
            args,
        } => {
            // FNV-1a: stable, unlike std's hasher.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in target
                .bytes()
                .chain(method.bytes())
                .chain(args.iter().copied())
            {
                h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            match h % 10 {
                0 => StepOutcome::Failed {
                    error: encode(&format!("no room for {}", h % 97)).unwrap(),
                    message: "no room".into(),
                    attempts: 2,
                },
                1 => StepOutcome::TimedOut { attempts: 3 },
                2 => StepOutcome::Panicked {
                    message: format!("boom {}", h % 89),
                    attempts: 1,
                },
                3 => StepOutcome::Unknown {
                    reason: "not deployed".into(),
                },
                _ => StepOutcome::Completed(encode(&(h % 10_000)).unwrap()),
            }
        }
    }
}

/// The live state right after one poll (the start or one applied completion).
#[derive(Debug)]
struct Snapshot {
    /// History length right after this step's `Completed` event (0 for the start).
    after_event: usize,
    commands: Vec<CommandRecord>,
    status: Status,
    pending: Vec<Position>,
    now: Timestamp,
}

#[derive(Debug)]
struct Live {
    instance: WorkflowInstance,
    history: History,
    status: Status,
    snapshots: Vec<Snapshot>,
    /// Positions, in the order their completions were applied.
    delivered: Vec<Position>,
    /// Every command created, indexed by position.
    created: Vec<CommandRecord>,
    /// The workflow clock when each command was created, indexed by position.
    created_at: Vec<Timestamp>,
}

impl Live {
    fn start(definition: &dyn WorkflowDefinition, id: &str) -> Self {
        let call = ScriptStub.run("tag".to_string());
        let input = call.encode_args(&infinitic::Limits::default()).unwrap();
        let at = Timestamp::from_millis(START_MILLIS);
        let workflow_id = WorkflowId::new(id);
        let history = History::new(
            workflow_id.clone(),
            definition.name(),
            call.method(),
            input.clone(),
            at,
        );
        let (instance, progress) = WorkflowInstance::start(
            definition,
            Start {
                workflow_id,
                generation: infinitic::Generation::FIRST,
                run: MethodRun(0),
                method: call.method(),
                input: &input,
                at,
            },
        )
        .unwrap();
        let mut live = Live {
            instance,
            history,
            status: Status::Running,
            snapshots: Vec::new(),
            delivered: Vec::new(),
            created: Vec::new(),
            created_at: Vec::new(),
        };
        live.record(progress);
        live
    }

    fn record(&mut self, progress: Progress) {
        for record in &progress.commands {
            assert_eq!(
                record.position as usize,
                self.created.len(),
                "positions are dense"
            );
            assert!(
                record.location.is_some(),
                "every command knows its source line"
            );
            self.created.push(record.clone());
            self.created_at.push(self.instance.now());
        }
        let after_event = self.history.events.len();
        self.history.record_scheduled(&progress.commands);
        self.status = progress.status.clone();
        self.snapshots.push(Snapshot {
            after_event,
            commands: progress.commands,
            status: progress.status,
            pending: self.instance.pending().collect(),
            now: self.instance.now(),
        });
    }

    fn running(&self) -> bool {
        self.status == Status::Running
    }

    fn pending(&self) -> Vec<Position> {
        self.instance.pending().collect()
    }

    /// Created, never completed and no longer awaited: the losers of selects.
    fn abandoned(&self) -> Vec<Position> {
        let pending: BTreeSet<Position> = self.instance.pending().collect();
        (0..self.created.len() as Position)
            .filter(|p| !pending.contains(p) && !self.delivered.contains(p))
            .filter(|&p| !self.created[p as usize].command.is_settled_at_once())
            .collect()
    }

    /// Completes the pending command `choice` picks (the lowest without a choice).
    fn step(&mut self, choice: Option<Pick>) {
        let pending = self.pending();
        assert!(
            !pending.is_empty(),
            "a running instance waits on a durable step"
        );
        let position = pending[choice.map_or(0, |c| c.index(pending.len()))];
        let command = self.created[position as usize].command.clone();
        // Timers fire at their time; a call ends a second after the poll that created it, so
        // it may be applied after a later timer: the workflow clock must not go back.
        let at = match command {
            Command::StartTimer { fire_at } => fire_at,
            _ => self.created_at[position as usize] + Duration::from_secs(1),
        };
        let completion = Completion {
            run: MethodRun(0),
            position,
            at,
            outcome: outcome_for(&command),
        };
        match self.instance.apply(completion.clone()) {
            Ok(Applied::Progressed(progress)) => {
                self.delivered.push(position);
                self.history
                    .events
                    .push(HistoryEvent::Completed(completion));
                self.record(progress);
                // The workflow clock is the latest time of any applied completion.
                let latest = self.history.completions().map(|c| c.at).max();
                assert_eq!(
                    self.instance.now(),
                    latest.unwrap().max(self.history.started_at)
                );
            }
            other => panic!("a pending command's completion is applied, got {other:?}"),
        }
    }

    fn finish(mut self, order: &[Pick]) -> Self {
        let mut choices = order.iter().copied();
        while self.running() {
            self.step(choices.next());
        }
        self
    }

    fn output(&self) -> Vec<String> {
        output_of(&self.status)
    }
}

fn run(script: &[Op], id: &str, order: &[Pick]) -> Live {
    Live::start(&definition(script), id).finish(order)
}

fn output_of(status: &Status) -> Vec<String> {
    match status {
        Status::Completed(bytes) => infinitic::decode(bytes).unwrap(),
        other => panic!("expected a completed run, got {other:?}"),
    }
}

/// Commands with their source locations, for comparisons that include the location.
fn detailed<'a>(
    records: impl IntoIterator<Item = &'a CommandRecord>,
) -> Vec<(Position, Command, Option<String>)> {
    records
        .into_iter()
        .map(|r| {
            (
                r.position,
                r.command.clone(),
                r.location.map(|l| l.to_string()),
            )
        })
        .collect()
}

fn pending_of(instance: &WorkflowInstance) -> Vec<Position> {
    instance.pending().collect()
}

fn prefix(history: &History, len: usize) -> History {
    History {
        events: history.events[..len].to_vec(),
        ..history.clone()
    }
}

/// A crash after `cut` events: replays that prefix cold, then feeds the rest of `history` to
/// the recovered instance. Returns the final status, the history it rebuilt and the instance.
fn recover_and_continue(
    definition: &dyn WorkflowDefinition,
    history: &History,
    cut: usize,
) -> (Status, History, WorkflowInstance) {
    let mut rebuilt = prefix(history, cut);
    let mut recovered = replay(definition, &rebuilt).unwrap();
    rebuilt.record_scheduled(&recovered.new_commands);
    let status = continue_sticky(
        &mut recovered.instance,
        recovered.status,
        &mut rebuilt,
        &history.events[cut..],
    );
    (status, rebuilt, recovered.instance)
}

/// Feeds the completions of `events` to `instance` one by one, recording into `history` what
/// a live engine would. Returns the final status.
fn continue_sticky(
    instance: &mut WorkflowInstance,
    mut status: Status,
    history: &mut History,
    events: &[HistoryEvent],
) -> Status {
    for completion in events.iter().filter_map(|e| match e {
        HistoryEvent::Completed(c) => Some(c),
        _ => None,
    }) {
        match instance.apply(completion.clone()) {
            Ok(Applied::Progressed(progress)) => {
                history
                    .events
                    .push(HistoryEvent::Completed(completion.clone()));
                history.record_scheduled(&progress.commands);
                status = progress.status;
            }
            other => panic!("history's completions apply, got {other:?}"),
        }
    }
    status
}

fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            if !message.is_some_and(|m| m.starts_with("scripted panic")) {
                default(info);
            }
        }));
    });
}

// ------------------------------------------------------------------------------------------
// Strategies
// ------------------------------------------------------------------------------------------

/// A leaf that creates one command.
fn single_leaf() -> BoxedStrategy<Leaf> {
    prop_oneof![
        (0u64..40).prop_map(Leaf::Square),
        (0u64..40, 0u64..40).prop_map(|(a, b)| Leaf::Add(a, b)),
        (0u64..40).prop_map(Leaf::Put),
        (1u64..7200).prop_map(Leaf::Sleep),
        (0u64..40).prop_map(Leaf::Child),
    ]
    .boxed()
}

fn any_leaf() -> BoxedStrategy<Leaf> {
    prop_oneof![
        5 => single_leaf(),
        1 => (1u64..7200, 0u64..40).prop_map(|(s, x)| Leaf::SleepThen(s, x)),
    ]
    .boxed()
}

fn select_op() -> BoxedStrategy<Op> {
    prop::collection::vec(single_leaf(), 1..4)
        .prop_map(Op::Select)
        .boxed()
}

/// Scripts whose output does not depend on the delivery order, except through selects.
fn parallel_script() -> BoxedStrategy<Vec<Op>> {
    let op = prop_oneof![
        4 => any_leaf().prop_map(Op::Step),
        3 => prop::collection::vec(any_leaf(), 0..5).prop_map(Op::Join),
        3 => select_op(),
        1 => Just(Op::Random),
        1 => Just(Op::Uuid),
        1 => Just(Op::Inline),
    ];
    prop::collection::vec(op, 0..8).boxed()
}

/// Everything, including the clock, panics and non-durable awaits.
fn full_script() -> BoxedStrategy<Vec<Op>> {
    let op = prop_oneof![
        4 => any_leaf().prop_map(Op::Step),
        3 => prop::collection::vec(any_leaf(), 0..5).prop_map(Op::Join),
        3 => prop::collection::vec(any_leaf(), 1..4).prop_map(Op::Select),
        1 => Just(Op::Random),
        1 => Just(Op::Uuid),
        2 => Just(Op::Now),
        1 => Just(Op::Inline),
        1 => prop_oneof![Just(Op::Panic), Just(Op::Stuck)],
    ];
    prop::collection::vec(op, 0..8).boxed()
}

/// Scripts that create one command at a time.
fn sequential_script() -> BoxedStrategy<Vec<Op>> {
    let op = prop_oneof![
        6 => any_leaf().prop_map(Op::Step),
        1 => Just(Op::Random),
        1 => Just(Op::Uuid),
        1 => Just(Op::Now),
    ];
    prop::collection::vec(op, 0..10).boxed()
}

/// `script` with `op` inserted at a place `at` picks.
fn with_op(mut script: Vec<Op>, at: Pick, op: Op) -> Vec<Op> {
    script.insert(at.index(script.len() + 1), op);
    script
}

/// A choice among `len` alternatives (shrinks towards the first).
#[derive(Clone, Copy, Debug)]
struct Pick(u16);

impl Pick {
    fn index(self, len: usize) -> usize {
        usize::from(self.0) % len
    }
}

fn pick() -> impl Strategy<Value = Pick> {
    any::<u16>().prop_map(Pick)
}

fn order() -> impl Strategy<Value = Vec<Pick>> {
    prop::collection::vec(pick(), 0..48)
}

// ------------------------------------------------------------------------------------------
// (a) Completion order
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever order parallel steps complete in, the result is the same (a select is won by
    /// the branch whose completion was applied first), and that order's history cold-replays
    /// to the very commands it recorded.
    #[test]
    fn completion_order_changes_nothing_but_select_winners(script in parallel_script(), order in order()) {
        let reference = run(&script, "wf-a", &[]);
        let live = run(&script, "wf-a", &order);

        check_deliveries(&script, &reference)?;
        check_deliveries(&script, &live)?;
        let reference_output = reference.output();
        prop_assert_eq!(&reference_output, &expected_output(&script, &reference_output, &reference.delivered));
        prop_assert_eq!(live.output(), expected_output(&script, &reference_output, &live.delivered));

        let definition = definition(&script);
        let runs_before = inline_runs();
        let cold = replay(&definition, &live.history).unwrap();
        prop_assert_eq!(inline_runs(), runs_before, "replay ran an inline step's closure");
        prop_assert_eq!(&cold.status, &live.status);
        prop_assert!(cold.new_commands.is_empty());
        prop_assert!(cold.instance.is_finished());

        // The same code re-run on the history's completions creates exactly its commands,
        // source locations included.
        let mut instance_history = prefix(&live.history, 0);
        let (mut instance, first) = WorkflowInstance::start(&definition, start_of(&live.history)).unwrap();
        instance_history.record_scheduled(&first.commands);
        let status = continue_sticky(&mut instance, first.status, &mut instance_history, &live.history.events);
        prop_assert_eq!(status, live.status.clone());
        prop_assert_eq!(detailed(instance_history.scheduled()), detailed(live.history.scheduled()));
        prop_assert_eq!(&instance_history, &live.history);
    }
}

fn start_of(history: &History) -> Start<'_> {
    Start {
        generation: history.generation,
        workflow_id: history.workflow_id.clone(),
        run: MethodRun(0),
        method: &history.method,
        input: &history.input,
        at: history.started_at,
    }
}

// ------------------------------------------------------------------------------------------
// (b) Every prefix, (c) sticky == cold
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Cut the history anywhere (a crash between any two records): replaying the prefix
    /// rebuilds exactly what the live instance had at that point, and produces the commands
    /// the live run produced but the prefix had not recorded yet.
    #[test]
    fn every_prefix_replays_to_the_live_state(script in full_script(), order in order()) {
        quiet_scripted_panics();
        let live = run(&script, "wf-b", &order);
        let definition = definition(&script);
        let events = &live.history.events;
        for cut in 0..=events.len() {
            let replayed = replay(&definition, &prefix(&live.history, cut)).unwrap();
            let at = live.snapshots.iter().rev().find(|s| s.after_event <= cut).unwrap();
            let unrecorded: Vec<&CommandRecord> = events[cut..]
                .iter()
                .map_while(|e| match e {
                    HistoryEvent::Scheduled(r) => Some(r),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(detailed(&replayed.new_commands), detailed(unrecorded), "cut {}", cut);
            if cut == at.after_event {
                prop_assert_eq!(detailed(&replayed.new_commands), detailed(&at.commands));
            }
            prop_assert_eq!(&replayed.status, &at.status, "cut {}", cut);
            prop_assert_eq!(pending_of(&replayed.instance), at.pending.clone(), "cut {}", cut);
            prop_assert_eq!(replayed.instance.now(), at.now, "cut {}", cut);
            prop_assert_eq!(replayed.instance.is_finished(), at.status != Status::Running);
        }
    }

    /// Sticky and cold agree: the live instance, a cold replay of its history, a cold replay of
    /// any prefix continued sticky, and a replay of the history after a trip through its
    /// encoding all end in the same status and state, with the same commands.
    #[test]
    fn sticky_equals_cold(script in full_script(), order in order()) {
        quiet_scripted_panics();
        let live = run(&script, "wf-c", &order);
        let definition = definition(&script);

        let cold = replay(&definition, &live.history).unwrap();
        prop_assert_eq!(&cold.status, &live.status);
        prop_assert!(cold.new_commands.is_empty());
        prop_assert_eq!(pending_of(&cold.instance), pending_of(&live.instance));
        prop_assert_eq!(cold.instance.now(), live.instance.now());
        prop_assert_eq!(cold.instance.is_finished(), live.instance.is_finished());

        // Crash after any completion, recover cold, go on sticky.
        for snapshot in &live.snapshots {
            let cut = snapshot.after_event;
            let (status, rebuilt, instance) =
                recover_and_continue(&definition, &live.history, cut);
            prop_assert_eq!(&status, &live.status, "recovered after event {}", cut);
            prop_assert_eq!(&rebuilt, &live.history);
            prop_assert_eq!(detailed(rebuilt.scheduled()), detailed(live.history.scheduled()));
            prop_assert_eq!(instance.now(), live.instance.now());
        }

        // What a store keeps is the encoded history (without source locations).
        let stored: History = infinitic::decode(&encode(&live.history).unwrap()).unwrap();
        prop_assert_eq!(&stored, &live.history);
        prop_assert_eq!(&replay(&definition, &stored).unwrap().status, &live.status);
    }
}

// ------------------------------------------------------------------------------------------
// (d) Duplicated, late and foreign deliveries
// ------------------------------------------------------------------------------------------

/// A delivery the engine must not apply.
#[derive(Clone, Debug)]
enum Noise {
    /// Again, with another outcome and a later time, a completion already applied.
    Duplicate(Pick),
    /// The completion of a select's loser, after the select was decided.
    Late(Pick),
    /// A completion for a position the run never created.
    Unknown(u32),
    /// A completion addressed to another method run.
    WrongRun(Pick),
    Nothing,
}

fn noise() -> impl Strategy<Value = Vec<Noise>> {
    let one = prop_oneof![
        3 => pick().prop_map(Noise::Duplicate),
        3 => pick().prop_map(Noise::Late),
        1 => (0u32..5).prop_map(Noise::Unknown),
        1 => pick().prop_map(Noise::WrongRun),
        2 => Just(Noise::Nothing),
    ];
    prop::collection::vec(one, 0..64)
}

/// Injects `noise` into `live`, checks it is ignored or rejected as it should be and changes
/// nothing; returns the completion if a careless store would have recorded it.
fn inject(
    live: &mut Live,
    script: &[Op],
    noise: &Noise,
) -> Result<Option<Completion>, TestCaseError> {
    let losers = select_losers(script, &live.delivered);
    // The engine forgot exactly the select losers.
    prop_assert_eq!(&live.abandoned(), &losers);
    let pending = live.pending();
    let now = live.instance.now();
    let finished = live.instance.is_finished();
    let created = live.created.len() as Position;
    let ignored = if finished {
        IgnoredReason::RunEnded
    } else {
        IgnoredReason::AlreadySettled
    };
    let at = Timestamp::from_millis(START_MILLIS + 1_000_000_000);
    let bogus = StepOutcome::Completed(encode(&"bogus").unwrap());
    let completion = |run, position| Completion {
        run: MethodRun(run),
        position,
        at,
        outcome: bogus.clone(),
    };
    let recordable = match *noise {
        Noise::Nothing => return Ok(None),
        Noise::Duplicate(i) if !live.delivered.is_empty() => {
            let c = completion(0, live.delivered[i.index(live.delivered.len())]);
            prop_assert_eq!(
                live.instance.apply(c.clone()),
                Ok(Applied::Ignored(ignored))
            );
            Some(c)
        }
        Noise::Late(i) if !losers.is_empty() => {
            let c = completion(0, losers[i.index(losers.len())]);
            prop_assert_eq!(
                live.instance.apply(c.clone()),
                Ok(Applied::Ignored(ignored))
            );
            Some(c)
        }
        Noise::Unknown(beyond) => {
            let position = created + beyond;
            let rejected = live.instance.apply(completion(0, position));
            prop_assert_eq!(
                &rejected,
                &Err(RejectedEvent::UnknownCommand { position, created })
            );
            let reason = rejected.unwrap_err().to_string();
            prop_assert!(
                reason.contains(&format!("no command at position {position}")),
                "{}",
                reason
            );
            None
        }
        Noise::WrongRun(i) if created > 0 => {
            let position = i.index(created as usize) as Position;
            prop_assert_eq!(
                live.instance.apply(completion(1, position)),
                Err(RejectedEvent::WrongRun {
                    expected: MethodRun(0),
                    found: MethodRun(1)
                })
            );
            None
        }
        Noise::Duplicate(_) | Noise::Late(_) | Noise::WrongRun(_) => return Ok(None),
    };
    prop_assert_eq!(live.pending(), pending);
    prop_assert_eq!(live.instance.now(), now);
    prop_assert_eq!(live.instance.is_finished(), finished);
    Ok(recordable)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Duplicates, late outcomes of abandoned select branches and deliveries for other runs or
    /// unknown positions, interleaved anywhere (and after the end), are ignored or rejected
    /// without changing the commands, the state or the result; a history that recorded the
    /// ignored ones still replays to the same result.
    #[test]
    fn duplicate_late_and_unknown_deliveries_change_nothing(
        script in parallel_script(),
        select in select_op(),
        at in pick(),
        order in order(),
        noise in noise(),
    ) {
        let script = with_op(script, at, select);
        let clean = run(&script, "wf-d", &order);

        let definition = definition(&script);
        let mut live = Live::start(&definition, "wf-d");
        let mut polluted = live.history.clone();
        let mut noise = noise.iter().cycle().take(noise.len().max(1) * 4);
        let mut choices = order.iter().copied();
        loop {
            for _ in 0..2 {
                if let Some(completion) = inject(&mut live, &script, noise.next().unwrap_or(&Noise::Nothing))? {
                    polluted.events.push(HistoryEvent::Completed(completion));
                }
            }
            if !live.running() {
                break;
            }
            let before = live.history.events.len();
            live.step(choices.next());
            polluted.events.extend_from_slice(&live.history.events[before..]);
        }
        // Everything, again, after the end.
        for noise in [Noise::Duplicate(Pick(0)), Noise::Late(Pick(1)), Noise::Unknown(0)] {
            inject(&mut live, &script, &noise)?;
        }

        check_deliveries(&script, &live)?;
        prop_assert_eq!(&live.history, &clean.history);
        prop_assert_eq!(detailed(live.history.scheduled()), detailed(clean.history.scheduled()));
        prop_assert_eq!(&live.status, &clean.status);
        prop_assert_eq!(&live.delivered, &clean.delivered);

        let replayed = replay(&definition, &polluted).unwrap();
        prop_assert_eq!(&replayed.status, &clean.status);
        prop_assert!(replayed.new_commands.is_empty());
        prop_assert_eq!(replayed.instance.now(), clean.instance.now());
    }
}

// ------------------------------------------------------------------------------------------
// (e) A changed workflow body
// ------------------------------------------------------------------------------------------

/// A change to a script: a new version of the workflow.
#[derive(Clone, Debug)]
enum Change {
    /// Replace the `k`th step by another.
    Replace(Pick, Leaf),
    /// Remove the `k`th statement.
    Remove(Pick),
    /// Insert a step before the `k`th statement (or at the end).
    Insert(Pick, Leaf),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (pick(), any_leaf()).prop_map(|(k, l)| Change::Replace(k, l)),
        pick().prop_map(Change::Remove),
        (pick(), any_leaf()).prop_map(|(k, l)| Change::Insert(k, l)),
    ]
}

fn apply_change(script: &[Op], change: &Change) -> Vec<Op> {
    let mut changed = script.to_vec();
    match change {
        Change::Replace(k, leaf) => {
            let steps: Vec<usize> = (0..changed.len())
                .filter(|&i| matches!(changed[i], Op::Step(_)))
                .collect();
            if !steps.is_empty() {
                changed[steps[k.index(steps.len())]] = Op::Step(leaf.clone());
            }
        }
        Change::Remove(k) if !changed.is_empty() => {
            changed.remove(k.index(script.len()));
        }
        Change::Remove(_) => {}
        Change::Insert(k, leaf) => {
            changed.insert(k.index(script.len() + 1), Op::Step(leaf.clone()))
        }
    }
    changed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Record a history with one version of a workflow, replay it with another: replay stops
    /// at the first position where the command sequences differ, names what history has and
    /// what the code now produces, and points at the line that produced it.
    #[test]
    fn a_changed_body_is_reported_where_it_changes(script in sequential_script(), change in change()) {
        let old = run(&script, "wf-e", &[]);
        let changed = apply_change(&script, &change);
        let before = sequential_commands(&script);
        let after = sequential_commands(&changed);
        prop_assert_eq!(
            old.history.scheduled().map(|r| r.command.signature()).collect::<Vec<_>>(),
            before.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()
        );

        let replayed = replay(&definition(&changed), &old.history).unwrap();
        let first_difference = (0..before.len().max(after.len()))
            .find(|&p| before.get(p).map(|c| &c.0) != after.get(p).map(|c| &c.0));
        match first_difference {
            // Same commands: the new version runs on.
            None => {
                prop_assert!(matches!(replayed.status, Status::Completed(_)), "{:?}", replayed.status);
                prop_assert!(replayed.new_commands.is_empty());
            }
            // The new version has more steps: they are new commands, dispatched after history.
            Some(p) if p == before.len() => {
                prop_assert_eq!(&replayed.status, &Status::Running);
                prop_assert_eq!(replayed.new_commands.len(), 1);
                let next = &replayed.new_commands[0];
                prop_assert_eq!(next.position as usize, p);
                prop_assert_eq!(&next.command.signature(), &after[p].0);
                prop_assert!(next.location.unwrap().to_string().starts_with(&location_of(after[p].1)));
            }
            Some(p) => {
                let Status::Parked(ParkReason::Nondeterminism(mismatch)) = &replayed.status else {
                    return Err(TestCaseError::fail(format!("expected a mismatch at {p}, got {:?}", replayed.status)));
                };
                let Mismatch { position, expected, found, location } = &**mismatch;
                prop_assert_eq!(*position as usize, p);
                prop_assert_eq!(expected, &Some(before[p].0.clone()));
                prop_assert_eq!(found, &after.get(p).map(|c| c.0.clone()));
                match after.get(p) {
                    Some((_, marker)) => {
                        let location = location.as_deref().unwrap_or_default();
                        prop_assert!(location.starts_with(&location_of(marker)), "{} at {}", location, marker);
                    }
                    None => prop_assert_eq!(location, &None),
                }
                prop_assert!(replayed.new_commands.is_empty());
                prop_assert!(replayed.instance.is_finished());
                let message = ParkReason::Nondeterminism(Box::new(Mismatch {
                    position: *position,
                    expected: expected.clone(),
                    found: found.clone(),
                    location: location.clone(),
                }))
                .to_string();
                prop_assert!(message.contains(&format!("at position {p}")), "{}", message);
            }
        }
    }
}

fn mismatch_of(script: &[Op], changed: &[Op], order: &[Pick]) -> Mismatch {
    let old = run(script, "wf-e", order);
    match replay(&definition(changed), &old.history).unwrap().status {
        Status::Parked(ParkReason::Nondeterminism(mismatch)) => *mismatch,
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn a_changed_branch_of_a_join_is_reported_at_its_position() {
    let script = [
        Op::Step(Leaf::Square(1)),
        Op::Join(vec![Leaf::Square(2), Leaf::Add(1, 2), Leaf::Sleep(5)]),
    ];
    let changed = [
        Op::Step(Leaf::Square(1)),
        Op::Join(vec![Leaf::Square(2), Leaf::Put(3), Leaf::Sleep(5)]),
    ];
    let mismatch = mismatch_of(&script, &changed, &[]);
    assert_eq!(mismatch.position, 2);
    assert_eq!(mismatch.expected, Some(calc("add")));
    assert_eq!(
        mismatch.found,
        Some(CommandSignature::CallService {
            service: "Store".into(),
            method: "put".into()
        })
    );
    assert!(mismatch.location.unwrap().starts_with(&location_of("put")));
}

#[test]
fn a_timer_instead_of_a_call_is_reported_with_both() {
    let script = [Op::Step(Leaf::Square(1)), Op::Step(Leaf::Child(2))];
    let changed = [Op::Step(Leaf::Square(1)), Op::Step(Leaf::Sleep(60))];
    let mismatch = mismatch_of(&script, &changed, &[]);
    assert_eq!(mismatch.position, 1);
    assert_eq!(
        mismatch.expected,
        Some(CommandSignature::StartChild {
            workflow: "Child".into(),
            method: "run".into()
        })
    );
    assert_eq!(mismatch.found, Some(CommandSignature::StartTimer));
    assert!(mismatch
        .location
        .clone()
        .unwrap()
        .starts_with(&location_of("sleep")));
    let message = ParkReason::Nondeterminism(Box::new(mismatch)).to_string();
    assert!(
        message.contains("history has child workflow Child::run, the code now produces timer"),
        "{message}"
    );
}

#[test]
fn a_command_created_earlier_than_in_history_names_what_history_has_there() {
    // Old: two calls one after the other. New: a call and a timer in parallel, so the code
    // creates position 1 before the completion of position 0 that history records first.
    let script = [Op::Step(Leaf::Square(1)), Op::Step(Leaf::Add(1, 2))];
    let changed = [Op::Join(vec![Leaf::Square(1), Leaf::Sleep(9)])];
    let mismatch = mismatch_of(&script, &changed, &[]);
    assert_eq!(mismatch.position, 1);
    assert_eq!(mismatch.expected, Some(calc("add")));
    assert_eq!(mismatch.found, Some(CommandSignature::StartTimer));
    assert!(mismatch
        .location
        .unwrap()
        .starts_with(&location_of("sleep")));
}

#[test]
fn a_branch_that_now_creates_its_call_at_once_is_reported() {
    // Old: a timer then (once fired) a call. New: the same two, created together.
    let script = [Op::Step(Leaf::SleepThen(5, 3))];
    let changed = [Op::Join(vec![Leaf::Sleep(5), Leaf::Square(3)])];
    let mismatch = mismatch_of(&script, &changed, &[]);
    assert_eq!(mismatch.position, 1);
    assert_eq!(mismatch.expected, Some(calc("square")));
    assert_eq!(mismatch.found, Some(calc("square")));
    assert!(mismatch
        .location
        .clone()
        .unwrap()
        .starts_with(&location_of("square")));
    let message = ParkReason::Nondeterminism(Box::new(mismatch)).to_string();
    assert!(
        message.contains(
            "history recorded call Calc::square only after a completion, the code now produces it before"
        ),
        "{message}"
    );
}

#[test]
fn a_history_of_another_order_is_not_a_mismatch() {
    // Lazy calls get their positions in the order their timers fired: both orders replay.
    let script = [Op::Join(vec![Leaf::SleepThen(5, 1), Leaf::SleepThen(9, 2)])];
    for first in [0u16, 1] {
        let order = [Pick(first), Pick(0)];
        let live = run(&script, "wf-e", &order);
        let cold = replay(&definition(&script), &live.history).unwrap();
        assert_eq!(cold.status, live.status);
        assert_eq!(
            live.output(),
            expected_output(&script, &live.output(), &live.delivered)
        );
    }
}

// ------------------------------------------------------------------------------------------
// (f) Deterministic random, uuid and clock
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// `random`, `random_range` and `uuid` draw the same values whatever the completion order,
    /// sticky or cold, from any recovery point; another instance draws others. `now` is the
    /// time of the completion being applied, the same sticky and cold.
    #[test]
    fn random_uuid_and_now_are_replayed_exactly(
        script in parallel_script(),
        at in (pick(), pick(), pick()),
        order in order(),
    ) {
        let script = with_op(with_op(with_op(script, at.0, Op::Random), at.1, Op::Uuid), at.2, Op::Now);
        let definition = definition(&script);
        let drawn = |output: &[String]| -> Vec<String> {
            output
                .iter()
                .filter(|l| l.starts_with("random ") || l.starts_with("uuid "))
                .cloned()
                .collect()
        };

        let in_order = run(&script, "wf-f", &[]);
        let live = run(&script, "wf-f", &order);
        let output = live.output();
        prop_assert_eq!(drawn(&output), drawn(&in_order.output()));
        prop_assert_ne!(drawn(&output), drawn(&run(&script, "wf-f2", &order).output()));

        // The clock only shows the start or times of completions, and never goes back.
        let times: BTreeSet<u64> = std::iter::once(START_MILLIS)
            .chain(live.history.completions().map(|c| c.at.as_millis()))
            .collect();
        let nows: Vec<u64> = output
            .iter()
            .filter_map(|l| l.strip_prefix("now "))
            .map(|t| t.parse().unwrap())
            .collect();
        prop_assert!(nows.iter().all(|t| times.contains(t)), "{:?} not in {:?}", nows, times);
        prop_assert!(nows.windows(2).all(|w| w[0] <= w[1]), "{:?}", nows);
        if let Some(Op::Now) = script.first() {
            prop_assert_eq!(nows[0], START_MILLIS);
        }

        // Cold, from any point, then sticky: the same lines.
        for snapshot in &live.snapshots {
            let cut = snapshot.after_event;
            let (status, _, _) = recover_and_continue(&definition, &live.history, cut);
            prop_assert_eq!(output_of(&status), output.clone(), "recovered after event {}", cut);
        }
    }
}

#[test]
fn the_clock_starts_at_the_start_and_follows_completions() {
    let script = [
        Op::Now,
        Op::Step(Leaf::Sleep(90)),
        Op::Now,
        Op::Step(Leaf::Square(2)),
        Op::Now,
    ];
    let live = run(&script, "wf-f", &[]);
    let output = live.output();
    assert_eq!(output[1], format!("now {START_MILLIS}"));
    assert_eq!(output[3], format!("now {}", START_MILLIS + 90_000));
    assert_eq!(output[5], format!("now {}", START_MILLIS + 91_000));
}
