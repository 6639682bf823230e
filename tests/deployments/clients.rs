//! Clients: a handle built from an id in another process gets the result of a running
//! instance when it ends, and of an ended one at once; a second start of the same id from
//! another client starts nothing new and is answered too; an unknown id is `NotFound`. On the
//! distributed deployment the other client reaches the broker and reads PostgreSQL as a role
//! that may only read: everything it does needs no database write.

use crate::dead_letters::raw;
use crate::{dead_letters_until, finish, retries, Deployment};
use infinitic::prelude::*;
use infinitic::ClientError;
use infinitic::Transport;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[service]
pub trait Counter {
    /// Counts one call; returns `n + 1`.
    async fn bump(&self, n: u64) -> u64;
}

#[derive(Clone, Default)]
struct CounterImpl(Arc<AtomicU32>);

impl Counter for CounterImpl {
    async fn bump(&self, n: u64) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst);
        n + 1
    }
}

#[workflow]
pub trait Slow {
    /// Sleeps `millis`, then calls the counter once.
    async fn run(&self, millis: u64) -> u64;
}

#[derive(Default)]
pub struct SlowImpl {
    counter: CounterStub,
}

#[workflow]
impl Slow for SlowImpl {
    async fn run(&self, millis: u64) -> u64 {
        workflow::sleep(Duration::from_millis(millis)).await;
        self.counter.bump(millis).await.unwrap_or(0)
    }
}

pub async fn another_process_awaits_results_by_id<D: Deployment>(d: D) {
    let counter = CounterImpl::default();
    let calls = Arc::clone(&counter.0);
    let worker = d.start(retries(3, Duration::from_millis(50)), |w| {
        w.workflow(SlowImpl::default)
            .service(CounterDispatcher::new(counter))
    });
    let starter = d.client();
    let other = d.other_client().await;

    // Running when the other process asks: reported when it ends.
    let started = starter
        .dispatch_with_id("slow-1", SlowStub.run(400))
        .await
        .unwrap();
    let by_id = other.handle::<u64>("slow-1");
    let (mine, theirs) = tokio::join!(finish(&d, &started), finish(&d, &by_id));
    assert_eq!((mine, theirs), (401, 401));

    // A second start of a running instance, from the other client: one instance, both told.
    let first = starter
        .dispatch_with_id("slow-2", SlowStub.run(300))
        .await
        .unwrap();
    let again = other
        .dispatch_with_id("slow-2", SlowStub.run(999))
        .await
        .unwrap();
    let (one, two) = tokio::join!(finish(&d, &first), finish(&d, &again));
    assert_eq!((one, two), (301, 301), "the first start's arguments won");

    // Ended: a new handle, from yet another process, is answered at once.
    let late = d.other_client().await;
    let ended = late.handle::<u64>("slow-1");
    let answered = ended.result_within(Duration::from_secs(2)).await;
    assert_eq!(answered.unwrap(), 401);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one service call per instance"
    );

    let missing = late.handle::<u64>("no-such-instance").result().await;
    assert!(
        matches!(missing, Err(ClientError::NotFound(_))),
        "{missing:?}"
    );

    // Garbage on a client's response topic (over a broker) is dead-lettered with the reason,
    // and the client goes on.
    if let Some(topic) = other.response_topic() {
        let junk = b"\xC1 not a response".to_vec();
        let published = d
            .transport()
            .publish(vec![raw(topic, "junk", junk.clone())]);
        published.await.unwrap();
        let letters = dead_letters_until(&d, |l| l.iter().any(|l| l.topic == topic)).await;
        let letter = letters.iter().find(|l| l.topic == topic).unwrap();
        assert_eq!(letter.payload, junk);
        assert!(
            letter
                .reason
                .starts_with("undecodable response on a client topic"),
            "{letter:?}"
        );
        let after = other
            .dispatch_with_id("slow-3", SlowStub.run(10))
            .await
            .unwrap();
        assert_eq!(
            finish(&d, &after).await,
            11,
            "the client still reads its topic"
        );
    }
    d.stop(worker).await;
}

#[workflow]
pub trait Fragile {
    /// Panics when `n` is odd.
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct FragileImpl;

#[workflow]
impl Fragile for FragileImpl {
    async fn run(&self, n: u64) -> u64 {
        assert!(n.is_multiple_of(2), "odd input {n}");
        n
    }
}

/// The same workflow seen by a newer client: one method more, which workers lack.
#[allow(dead_code)]
#[workflow(name = "Fragile")]
pub trait FragileV2 {
    async fn run(&self, n: u64) -> u64;
    async fn run_twice(&self, n: u64) -> u64;
}

pub async fn waiting_clients_learn_of_parks_and_failed_starts<D: Deployment>(d: D) {
    let worker = d.start(retries(3, Duration::from_millis(50)), |w| {
        w.workflow(FragileImpl::default)
    });
    let client = d.client();
    let other = d.other_client().await;

    // Workflow code that panics parks its instance: both handles are told why.
    let parked = client
        .dispatch_with_id("fragile-1", FragileStub.run(1))
        .await
        .unwrap();
    let by_id = other.handle::<u64>("fragile-1");
    for handle in [&parked, &by_id] {
        match handle.result_within(d.patience()).await {
            Err(ClientError::Parked { reason, .. }) => {
                assert!(reason.contains("odd input 1"), "{reason}")
            }
            other => panic!("expected a park, got {other:?}"),
        }
    }

    // A method the workers lack: the instance fails to start, and the client is told.
    let failed = client
        .dispatch_with_id("fragile-2", FragileV2Stub.run_twice(2))
        .await
        .unwrap();
    match failed.result_within(d.patience()).await {
        Err(ClientError::Failed { reason, .. }) => {
            assert!(reason.contains("run_twice"), "{reason}")
        }
        other => panic!("expected a failed start, got {other:?}"),
    }
    d.stop(worker).await;
}
