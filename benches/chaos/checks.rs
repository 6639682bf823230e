//! What the chaos program checks once every workflow ended, on the stored histories
//! (PostgreSQL) and on the services' side-effect file.

use infinitic::{Command, CommandId, HistoryEvent, MethodRun, StateStore, WorkflowId};
use std::collections::BTreeMap;
use std::path::Path;

/// Findings over every instance checked.
#[derive(Default, Debug)]
pub struct Findings {
    pub instances: usize,
    pub commands: usize,
    pub service_calls: usize,
    pub timers: usize,
    pub children: usize,
    /// A position scheduled twice.
    pub scheduled_twice: usize,
    /// A command whose completion is recorded more than once: a step applied twice.
    pub applied_twice: usize,
    /// A command that never completed.
    pub never_completed: usize,
    /// A timer that fired before its due time.
    pub early_timers: usize,
    /// How long after its due time each timer resumed its code, ms.
    pub timer_lateness_ms: Vec<u64>,
    /// Instances that are missing from the store.
    pub missing: usize,
    /// The task ids every service call completed under (expected side effects).
    pub calls: Vec<String>,
    /// The first problems, in words.
    pub problems: Vec<String>,
}

impl Findings {
    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }
}

/// Checks `root` and, through the children its history names, every instance below it.
pub async fn check_tree<S: StateStore>(state: &S, root: WorkflowId, findings: &mut Findings) {
    let mut pending = vec![root];
    while let Some(id) = pending.pop() {
        let stored = match state.load(&id, true).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                findings.missing += 1;
                findings.problem(format!("{id}: not in the store"));
                continue;
            }
            Err(e) => panic!("load {id}: {e}"),
        };
        findings.instances += 1;
        let mut scheduled: BTreeMap<u32, Command> = BTreeMap::new();
        let mut completed: BTreeMap<u32, u32> = BTreeMap::new();
        for event in &stored.history {
            match event {
                HistoryEvent::Scheduled(record) => {
                    if scheduled
                        .insert(record.position, record.command.clone())
                        .is_some()
                    {
                        findings.scheduled_twice += 1;
                        findings.problem(format!(
                            "{id}: position {} scheduled twice",
                            record.position
                        ));
                    }
                }
                HistoryEvent::Completed(completion) => {
                    let count = completed.entry(completion.position).or_insert(0);
                    *count += 1;
                    if *count == 2 {
                        findings.applied_twice += 1;
                        findings.problem(format!(
                            "{id}: position {} completed twice",
                            completion.position
                        ));
                    }
                }
                HistoryEvent::Signaled(_) => findings.problem(format!("{id}: a signal?")),
            }
        }
        for (position, command) in &scheduled {
            findings.commands += 1;
            // An inline step is complete as recorded: no completion event.
            let inline = matches!(command, Command::Inline { .. });
            if !inline && !completed.contains_key(position) {
                findings.never_completed += 1;
                findings.problem(format!("{id}: position {position} never completed"));
            }
            let command_id = CommandId::new(id.clone(), MethodRun(0), *position);
            match command {
                Command::CallService { .. } => {
                    findings.service_calls += 1;
                    findings.calls.push(command_id.to_string());
                }
                Command::StartTimer { .. } => findings.timers += 1,
                // The wall clock when the code resumed after the timer before it.
                Command::Inline { value } => {
                    let timer = position.checked_sub(1).and_then(|p| scheduled.get(&p));
                    let Some(Command::StartTimer { fire_at }) = timer else {
                        findings.problem(format!("{id}: an inline step not after a timer"));
                        continue;
                    };
                    let woke: u64 = infinitic::decode(value).unwrap_or(0);
                    if woke < fire_at.as_millis() {
                        findings.early_timers += 1;
                        findings.problem(format!(
                            "{id}: timer due at {} ms resumed the code at {woke} ms",
                            fire_at.as_millis()
                        ));
                    } else {
                        let late = woke - fire_at.as_millis();
                        findings.timer_lateness_ms.push(late);
                    }
                }
                Command::StartChild { .. } => {
                    findings.children += 1;
                    pending.push(WorkflowId::new(command_id.to_string()));
                }
                other => findings.problem(format!("{id}: unexpected command {other:?}")),
            }
        }
    }
}

/// Side effects: how many times each task ran.
#[derive(Debug, Default)]
pub struct Effects {
    /// Lines in the file.
    pub lines: usize,
    /// Steps whose side effect is missing.
    pub missing: usize,
    /// Steps that ran more than once, and the extra runs.
    pub repeated_steps: usize,
    pub extra_runs: usize,
    /// Side effects of no recorded step.
    pub unknown: usize,
    /// Examples of repeated steps: task id and the attempts seen.
    pub examples: Vec<String>,
}

/// Reads the side-effect file against the recorded service calls.
pub fn effects(file: &Path, calls: &[String]) -> Effects {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut runs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut effects = Effects::default();
    for line in text.lines() {
        effects.lines += 1;
        let (id, attempt) = line.rsplit_once(' ').unwrap_or((line, "?"));
        runs.entry(id).or_default().push(attempt);
    }
    for call in calls {
        match runs.remove(call.as_str()) {
            None => effects.missing += 1,
            Some(attempts) if attempts.len() > 1 => {
                effects.repeated_steps += 1;
                effects.extra_runs += attempts.len() - 1;
                if effects.examples.len() < 5 {
                    effects.examples.push(format!(
                        "{call} ran {} times (attempts {attempts:?})",
                        attempts.len()
                    ));
                }
            }
            Some(_) => {}
        }
    }
    effects.unknown = runs.len();
    effects
}
