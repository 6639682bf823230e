//! Bytes that are not our messages, published to our topics: workers dead-letter them with a
//! reason, keeping the bytes, and go on; a workflow started afterwards completes.

use crate::dead_letters::raw;
use crate::{dead_letters_until, finish, retries, Deployment};
use infinitic::prelude::*;
use infinitic::Transport;
use std::time::Duration;

#[service]
pub trait Doubler {
    async fn double(&self, n: u64) -> u64;
}

struct DoublerImpl;

impl Doubler for DoublerImpl {
    async fn double(&self, n: u64) -> u64 {
        2 * n
    }
}

#[workflow]
pub trait Twice {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct TwiceImpl {
    doubler: DoublerStub,
}

#[workflow]
impl Twice for TwiceImpl {
    async fn run(&self, n: u64) -> u64 {
        self.doubler.double(n).await.unwrap_or(0)
    }
}

pub async fn garbage_on_our_topics_is_dead_lettered_and_workers_go_on<D: Deployment>(d: D) {
    let worker = d.start(retries(3, Duration::from_millis(50)), |w| {
        w.service(DoublerDispatcher::new(DoublerImpl))
            .workflow(TwiceImpl::default)
    });
    let workflow_junk = b"\xC1 not an envelope".to_vec();
    let task_junk = vec![0xB7, 1, 0xC1];
    d.transport()
        .publish(vec![
            raw("workflow:Twice", "junk", workflow_junk.clone()),
            raw("service:Doubler", "junk", task_junk.clone()),
        ])
        .await
        .unwrap();
    let letters = dead_letters_until(&d, |l| l.len() >= 2).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let on = |topic: &str| {
        letters
            .iter()
            .find(|l| l.topic == topic)
            .unwrap_or_else(|| panic!("no dead letter from {topic}: {letters:?}"))
    };
    let workflow = on("workflow:Twice");
    assert_eq!(workflow.payload, workflow_junk);
    assert!(
        workflow
            .reason
            .starts_with("undecodable workflow message: not an infinitic message"),
        "{workflow:?}"
    );
    let task = on("service:Doubler");
    assert_eq!(task.payload, task_junk);
    assert!(
        task.reason
            .starts_with("undecodable task message: malformed"),
        "{task:?}"
    );
    let handle = d
        .client()
        .dispatch_with_id("twice-1", TwiceStub.run(21))
        .await
        .unwrap();
    assert_eq!(
        finish(&d, &handle).await,
        42,
        "the workers still run workflows"
    );
    d.stop(worker).await;
}
