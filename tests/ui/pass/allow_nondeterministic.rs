// `#[allow_nondeterministic("why")]` marks a reviewed exception on one statement or on a whole
// method; the attribute is removed by `#[workflow]`, and the rest stays checked.
use infinitic::prelude::*;
use std::time::Duration;

#[workflow]
pub trait Diagnostics {
    async fn timed(&self, label: String) -> String;
    async fn host(&self) -> bool;
}

#[derive(Default)]
pub struct DiagnosticsImpl;

#[workflow]
impl Diagnostics for DiagnosticsImpl {
    async fn timed(&self, label: String) -> String {
        let mut wall_clock = Vec::new();
        // On a `let` statement.
        #[allow_nondeterministic("wall time only feeds a metric; it never decides a command")]
        let started = std::time::Instant::now();
        workflow::sleep(Duration::from_secs(5)).await;
        // On an expression statement, and on a statement in a nested block.
        #[allow_nondeterministic("wall time only feeds a metric")]
        wall_clock.push(started.elapsed());
        if label.is_empty() {
            #[allow_nondeterministic("wall time only feeds a metric")]
            wall_clock.push(std::time::SystemTime::now().elapsed().unwrap_or_default());
        }
        // On a compound assignment and on a `return`: any statement.
        let mut jitter = Duration::ZERO;
        #[allow_nondeterministic("wall time only feeds a metric")]
        jitter += started.elapsed();
        if jitter == Duration::MAX {
            #[allow_nondeterministic("unreachable; shows `return`")]
            return format!("{:?}", std::time::SystemTime::now());
        }
        format!("{label}: {} sample(s)", wall_clock.len())
    }

    #[allow_nondeterministic("reads a constant of the deployment, identical on every worker")]
    async fn host(&self) -> bool {
        let path = std::env::var("PATH").unwrap_or_default();
        let _ = std::time::Instant::now();
        path.len() < usize::MAX
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let run = WorkflowTester::new()
        .run(
            DiagnosticsImpl::default,
            DiagnosticsStub.timed("step".into()),
        )
        .await
        .expect("completes");
    assert_eq!(run.output, "step: 1 sample(s)");
    assert_eq!(run.elapsed, Duration::from_secs(5));

    let run = WorkflowTester::new()
        .run(DiagnosticsImpl::default, DiagnosticsStub.host())
        .await
        .expect("completes");
    assert!(run.output);
}
