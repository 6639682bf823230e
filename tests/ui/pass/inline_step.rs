// An inline step may read the wall clock, randomness and the environment without
// `#[allow_nondeterministic]`: its value is recorded once and returned on every replay.
use infinitic::prelude::*;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

#[workflow]
trait Stamped {
    async fn run(&self) -> (u64, String, usize);
}

#[derive(Default)]
struct StampedImpl;

#[workflow]
impl Stamped for StampedImpl {
    async fn run(&self) -> (u64, String, usize) {
        let now: u64 = workflow::inline(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        let home: String = workflow::inline(|| std::env::var("HOME").unwrap_or_default());
        let buckets: usize = workflow::inline(|| {
            let mut counts = HashMap::new();
            counts.insert("a", 1);
            counts.len()
        });
        (now, home, buckets)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let run = WorkflowTester::new()
        .run(StampedImpl::default, StampedStub.run())
        .await
        .expect("completes");
    assert!(run.output.0 > 0);
    assert_eq!(run.output.2, 1);
    let replayed = infinitic::replay(&WorkflowFactory::new(StampedImpl::default), &run.history)
        .expect("replays");
    assert_eq!(
        replayed.status,
        infinitic::Status::Completed(infinitic::encode(&run.output).unwrap())
    );
}
