//! Signals under random arrival times, duplicates and crashes: a live instance is fed signals
//! (on two channels, some sent twice) and timer completions in a random interleaving; then
//! - a cold replay of its history ends in the same state (status, pending commands, clock,
//!   buffered signals), and so does a replay of every prefix at each step;
//! - a crash after any step, recovered by replaying the prefix and fed the rest of the same
//!   events, ends exactly like the uninterrupted run;
//! - a signal delivered again under its id changes nothing.

use infinitic::prelude::*;
use infinitic::{
    buffered_signals, decode, replay, Applied, Command, Completion, Generation, History,
    HistoryEvent, MethodRun, Position, Signaled, Start, Status, StepOutcome, Timestamp,
    WorkflowDefinition, WorkflowId, WorkflowInstance,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One statement of the scripted workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Receive one value on channel `a` (or `b`), of at least `min` if set.
    Receive { on_b: bool, min: Option<u64> },
    /// Receive up to `n` values.
    ReceiveUpTo { on_b: bool, n: u8 },
    /// Whether a value is buffered on the channel.
    IsBuffered { on_b: bool },
    /// A durable timer.
    Sleep { ms: u64 },
    /// A receive raced against a timer.
    RaceTimer { on_b: bool, ms: u64 },
}

#[workflow]
pub trait Listener {
    async fn run(&self, script: Vec<Op>) -> Vec<String>;
    #[channel(capacity = 4)]
    fn a(&self) -> Channel<u64>;
    #[channel(capacity = 4)]
    fn b(&self) -> Channel<u64>;
}

#[derive(Default)]
pub struct ListenerImpl;

impl ListenerImpl {
    fn channel(&self, on_b: bool) -> Channel<u64> {
        if on_b {
            self.b()
        } else {
            self.a()
        }
    }
}

#[workflow]
impl Listener for ListenerImpl {
    async fn run(&self, script: Vec<Op>) -> Vec<String> {
        let mut log = Vec::new();
        for op in script {
            let line = match op {
                Op::Receive { on_b, min } => {
                    let mut channel = self.channel(on_b);
                    if let Some(min) = min {
                        channel = channel.filtered(Filter::field("").ge(min));
                    }
                    format!("got {}", channel.receive().await)
                }
                Op::ReceiveUpTo { on_b, n } => {
                    let values = self.channel(on_b).receive_up_to(usize::from(n)).await;
                    format!("got {values:?}")
                }
                Op::IsBuffered { on_b } => format!("buffered {}", self.channel(on_b).is_buffered()),
                Op::Sleep { ms } => {
                    workflow::sleep(Duration::from_millis(ms)).await;
                    format!("slept at {}", workflow::timestamp().as_millis())
                }
                Op::RaceTimer { on_b, ms } => {
                    let timer = workflow::sleep(Duration::from_millis(ms));
                    match workflow::select2(self.channel(on_b).receive(), timer).await {
                        workflow::Either::Left(value) => format!("raced {value}"),
                        workflow::Either::Right(()) => "timed out".to_string(),
                    }
                }
            };
            log.push(line);
        }
        log
    }
}

const START: u64 = 1_767_225_600_000;
const CAPACITY: usize = 4;

fn definition() -> impl WorkflowDefinition {
    infinitic::WorkflowFactory::new(ListenerImpl::default)
}

/// A signal to send: its id, channel and value.
#[derive(Clone, Debug)]
struct Send {
    id: String,
    on_b: bool,
    value: u64,
}

impl Send {
    fn channel(&self) -> String {
        if self.on_b { "b" } else { "a" }.to_string()
    }
}

/// The live run, recorded as a worker records it.
struct Live {
    instance: WorkflowInstance,
    history: History,
    status: Status,
    /// History length after each step (the start included).
    steps: Vec<usize>,
}

fn start(script: &[Op]) -> Live {
    let call = ListenerStub.run(script.to_vec());
    let input = call.encode_args(&infinitic::Limits::default()).unwrap();
    let at = Timestamp::from_millis(START);
    let id = WorkflowId::new("listener");
    let mut history = History::new(id.clone(), "Listener", "run", input.clone(), at);
    let (instance, progress) = WorkflowInstance::start(
        &definition(),
        Start {
            workflow_id: id,
            generation: Generation::FIRST,
            run: MethodRun(0),
            method: "run",
            input: &input,
            at,
        },
    )
    .unwrap();
    history.record_scheduled(&progress.commands);
    let steps = vec![history.events.len()];
    Live {
        instance,
        history,
        status: progress.status,
        steps,
    }
}

impl Live {
    fn running(&self) -> bool {
        self.status == Status::Running
    }

    /// The pending timers, earliest first.
    fn timers(&self) -> Vec<(Timestamp, Position)> {
        let pending: Vec<Position> = self.instance.pending().collect();
        let mut timers: Vec<(Timestamp, Position)> = self
            .history
            .scheduled()
            .filter(|r| pending.contains(&r.position))
            .filter_map(|r| match r.command {
                Command::StartTimer { fire_at } => Some((fire_at, r.position)),
                _ => None,
            })
            .collect();
        timers.sort();
        timers
    }

    /// Fires the earliest pending timer; false if there is none.
    fn fire(&mut self) -> bool {
        let Some((fire_at, position)) = self.timers().first().copied() else {
            return false;
        };
        let completion = Completion {
            run: MethodRun(0),
            position,
            at: fire_at.max(self.instance.now()),
            outcome: StepOutcome::Completed(infinitic::encode(&()).unwrap()),
        };
        match self.instance.apply(completion.clone()) {
            Ok(Applied::Progressed(progress)) => {
                self.history
                    .events
                    .push(HistoryEvent::Completed(completion));
                self.history.record_scheduled(&progress.commands);
                self.status = progress.status;
                self.steps.push(self.history.events.len());
            }
            other => panic!("a pending timer's completion applies: {other:?}"),
        }
        true
    }

    /// Delivers `send`; returns what the engine did.
    fn signal(&mut self, send: &Send) -> Signaled {
        let at = self.instance.now() + Duration::from_millis(1);
        let signaled = self.instance.signal(
            send.id.clone(),
            send.channel(),
            infinitic::encode(&send.value).unwrap(),
            at,
            CAPACITY,
        );
        if let Signaled::Received { signal, progress } = &signaled {
            self.history
                .events
                .push(HistoryEvent::Signaled(signal.clone()));
            self.history.record_scheduled(&progress.commands);
            self.status = progress.status.clone();
            self.steps.push(self.history.events.len());
        }
        signaled
    }
}

/// What a driver choice does next: fire a timer, or send the next signal (again, if it was
/// sent before).
#[derive(Clone, Copy, Debug)]
enum Choice {
    Fire,
    Send,
    /// Sends again the signal that many sends back.
    Again(u8),
}

/// Runs `script` fed `sends` along `choices`.
fn drive(script: &[Op], sends: &[Send], choices: &[Choice]) -> Result<Live, TestCaseError> {
    let mut live = start(script);
    let mut next = 0;
    // Sends the instance received (a refused one, its channel full, was never received).
    let mut received: Vec<&Send> = Vec::new();
    for choice in choices
        .iter()
        .copied()
        .chain(std::iter::repeat(Choice::Fire))
    {
        if !live.running() {
            break;
        }
        match choice {
            Choice::Send if next < sends.len() => {
                let signaled = live.signal(&sends[next]);
                prop_assert!(
                    !matches!(signaled, Signaled::Duplicate | Signaled::RunEnded),
                    "{:?}",
                    signaled
                );
                if matches!(signaled, Signaled::Received { .. }) {
                    received.push(&sends[next]);
                }
                next += 1;
            }
            Choice::Again(back) if !received.is_empty() => {
                let sent = received[received.len() - 1 - usize::from(back) % received.len()];
                let before = live.history.events.len();
                let signaled = live.signal(sent);
                prop_assert!(
                    matches!(signaled, Signaled::Duplicate),
                    "a signal sent again is a duplicate: {:?}",
                    signaled
                );
                prop_assert_eq!(live.history.events.len(), before);
            }
            _ => {
                if !live.fire() {
                    // Nothing to fire: the run waits on a receive; send what is left, if any.
                    if next == sends.len() {
                        break;
                    }
                    if matches!(live.signal(&sends[next]), Signaled::Received { .. }) {
                        received.push(&sends[next]);
                    }
                    next += 1;
                }
            }
        }
    }
    Ok(live)
}

fn prefix(history: &History, len: usize) -> History {
    History {
        events: history.events[..len].to_vec(),
        ..history.clone()
    }
}

fn pending(instance: &WorkflowInstance) -> Vec<Position> {
    instance.pending().collect()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), prop::option::of(0u64..20)).prop_map(|(on_b, min)| Op::Receive { on_b, min }),
        2 => (any::<bool>(), 1u8..4).prop_map(|(on_b, n)| Op::ReceiveUpTo { on_b, n }),
        1 => any::<bool>().prop_map(|on_b| Op::IsBuffered { on_b }),
        2 => (1u64..50).prop_map(|ms| Op::Sleep { ms }),
        2 => (any::<bool>(), 1u64..50).prop_map(|(on_b, ms)| Op::RaceTimer { on_b, ms }),
    ]
}

fn sends() -> impl Strategy<Value = Vec<Send>> {
    prop::collection::vec((any::<bool>(), 0u64..20), 0..12).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (on_b, value))| Send {
                id: format!("s{i}"),
                on_b,
                value,
            })
            .collect()
    })
}

fn choices() -> impl Strategy<Value = Vec<Choice>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(Choice::Fire),
            4 => Just(Choice::Send),
            1 => (0u8..4).prop_map(Choice::Again),
        ],
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cold_replay_and_every_prefix_match_the_live_run(
        script in prop::collection::vec(op(), 0..8),
        sends in sends(),
        choices in choices(),
    ) {
        let live = drive(&script, &sends, &choices)?;
        let definition = definition();
        let cold = replay(&definition, &live.history).unwrap();
        prop_assert_eq!(&cold.status, &live.status);
        prop_assert!(cold.new_commands.is_empty());
        prop_assert_eq!(pending(&cold.instance), pending(&live.instance));
        prop_assert_eq!(cold.instance.now(), live.instance.now());

        // A crash after any step: replay the prefix, then feed the rest of the same events.
        for &cut in &live.steps {
            let mut recovered = replay(&definition, &prefix(&live.history, cut)).unwrap();
            prop_assert!(recovered.new_commands.is_empty(), "cut {}", cut);
            let mut status = recovered.status.clone();
            for event in &live.history.events[cut..] {
                match event {
                    HistoryEvent::Scheduled(_) => {}
                    HistoryEvent::Completed(completion) => {
                        match recovered.instance.apply(completion.clone()) {
                            Ok(Applied::Progressed(progress)) => status = progress.status,
                            other => prop_assert!(false, "cut {}: {:?}", cut, other),
                        }
                    }
                    HistoryEvent::Signaled(signal) => {
                        match recovered.instance.signal(
                            signal.id.clone(),
                            signal.channel.clone(),
                            signal.value.clone(),
                            signal.at,
                            CAPACITY,
                        ) {
                            Signaled::Received { signal: again, progress } => {
                                prop_assert_eq!(&again, signal, "cut {}: routed the same", cut);
                                status = progress.status;
                            }
                            other => prop_assert!(false, "cut {}: {:?}", cut, other),
                        }
                    }
                }
            }
            prop_assert_eq!(&status, &live.status, "cut {}", cut);
            prop_assert_eq!(pending(&recovered.instance), pending(&live.instance));
        }

        // The buffer the history implies never exceeds a channel's capacity.
        for count in buffered_signals(&live.history.events).values() {
            prop_assert!(*count <= CAPACITY);
        }
        if let Status::Completed(bytes) = &live.status {
            let lines: Vec<String> = decode(bytes).unwrap();
            prop_assert_eq!(lines.len(), script.len());
        }
    }
}

#[test]
fn a_full_channel_refuses_and_a_waiting_receive_takes_before_the_buffer() {
    let script = vec![
        Op::Sleep { ms: 10 },
        Op::Receive {
            on_b: false,
            min: Some(5),
        },
    ];
    let mut live = start(&script);
    let send = |i: usize, value| Send {
        id: format!("x{i}"),
        on_b: false,
        value,
    };
    for i in 0..CAPACITY {
        assert!(matches!(
            live.signal(&send(i, 1)),
            Signaled::Received { signal, .. } if signal.to.is_none()
        ));
    }
    assert_eq!(
        live.signal(&send(9, 1)),
        Signaled::Full { capacity: CAPACITY }
    );
    assert!(live.fire());
    // Waiting for a value of at least 5: a small one is refused (full), a big one taken.
    assert_eq!(
        live.signal(&send(10, 2)),
        Signaled::Full { capacity: CAPACITY }
    );
    let Signaled::Received { signal, progress } = live.signal(&send(11, 7)) else {
        panic!("the waiting receive takes it");
    };
    assert!(signal.to.is_some());
    let Status::Completed(bytes) = progress.status else {
        panic!("{:?}", progress.status);
    };
    let lines: Vec<String> = decode(&bytes).unwrap();
    assert_eq!(lines[1], "got 7");
}
