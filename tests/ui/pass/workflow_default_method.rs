// A #[workflow] trait method may have a default body. It runs as workflow code when the impl
// does not override it, so it is checked for determinism like an impl body (and accepts
// `#[allow_nondeterministic("why")]` the same way).
use infinitic::prelude::*;
use std::time::Duration;

#[workflow]
pub trait Reminder {
    async fn remind(&self, user: String) -> String;

    async fn remind_later(&self, user: String, minutes: u64) -> String {
        #[allow_nondeterministic("wall time only feeds a metric")]
        let started = std::time::Instant::now();
        workflow::sleep(Duration::from_secs(minutes * 60)).await;
        let _ = started;
        self.remind(user).await
    }
}

#[derive(Default)]
pub struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {
    async fn remind(&self, user: String) -> String {
        format!("hey {user}")
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(ReminderStub::METHODS, ["remind", "remind_later"]);
    let run = WorkflowTester::new()
        .run(
            ReminderImpl::default,
            ReminderStub.remind_later("ada".into(), 15),
        )
        .await
        .expect("completes");
    assert_eq!(run.output, "hey ada");
    assert_eq!(run.elapsed, Duration::from_secs(15 * 60));
}
