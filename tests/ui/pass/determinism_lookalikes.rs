// What the determinism check does not reject: the workflow-safe API, ordered collections,
// durations (also tokio's re-export of `Duration`), method calls that share a name with a forbidden function, and forbidden paths
// inside string literals.
use infinitic::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Default)]
pub struct Calendar {
    pub now: u64,
}

impl Calendar {
    fn sleep(&self, hours: u64) -> u64 {
        self.now + hours
    }

    fn spawn(&self) -> u64 {
        self.now
    }
}

#[workflow]
pub trait Planner {
    async fn plan(&self, hours: u64) -> String;
}

#[derive(Default)]
pub struct PlannerImpl {
    calendar: Calendar,
}

#[workflow]
impl Planner for PlannerImpl {
    async fn plan(&self, hours: u64) -> String {
        let now = workflow::now();
        workflow::sleep(Duration::from_secs(hours * 3600)).await;
        workflow::sleep(tokio::time::Duration::ZERO).await;
        let waited = workflow::now().duration_since(now).unwrap_or_default();
        let mut by_day: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
        by_day
            .entry(self.calendar.sleep(hours))
            .or_default()
            .insert("wake");
        by_day
            .entry(self.calendar.spawn())
            .or_default()
            .insert("start");
        let hint = "never call std::thread::sleep or SystemTime::now here";
        format!(
            "{}h {:?} {}",
            waited.as_secs() / 3600,
            by_day,
            hint.contains("sleep")
        )
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let run = WorkflowTester::new()
        .run(PlannerImpl::default, PlannerStub.plan(8))
        .await
        .expect("completes");
    assert_eq!(run.output, r#"8h {0: {"start"}, 8: {"wake"}} true"#);
}
