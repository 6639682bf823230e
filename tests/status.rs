//! Status that explains: a running instance shows what it waits on. A call to a service no
//! worker serves waits (services may be down for hours) and shows as that call, since when; a
//! parent waiting on a child that parked shows the child and why it parked; a timer shows when
//! it fires.

use infinitic::prelude::*;
use infinitic::status::Waiting;
use infinitic::store::memory::MemoryStore;
use infinitic::{Client, Timestamp, Worker, WorkerConfig, WorkflowId, WorkflowState};
use std::time::{Duration, Instant};

/// A service no worker serves.
#[service]
pub trait Ghost {
    async fn call(&self, n: u64) -> u64;
}

#[workflow]
pub trait Caller {
    async fn run(&self) -> u64;
}

#[derive(Default)]
pub struct CallerImpl {
    ghost: GhostStub,
}

#[workflow]
impl Caller for CallerImpl {
    async fn run(&self) -> u64 {
        self.ghost.call(7).await.unwrap_or(0)
    }
}

#[workflow]
pub trait Fragile {
    async fn run(&self) -> u64;
}

#[derive(Default)]
pub struct FragileImpl;

#[workflow]
impl Fragile for FragileImpl {
    async fn run(&self) -> u64 {
        panic!("a bug in the child")
    }
}

#[workflow]
pub trait Guardian {
    async fn run(&self) -> u64;
}

#[derive(Default)]
pub struct GuardianImpl {
    fragile: FragileStub,
}

#[workflow]
impl Guardian for GuardianImpl {
    async fn run(&self) -> u64 {
        workflow::sleep(Duration::from_millis(20)).await;
        self.fragile.run().await.unwrap_or(0)
    }
}

#[workflow]
pub trait Sleeper {
    async fn run(&self) -> u64;
}

#[derive(Default)]
pub struct SleeperImpl;

#[workflow]
impl Sleeper for SleeperImpl {
    async fn run(&self) -> u64 {
        workflow::sleep(Duration::from_secs(3600)).await;
        1
    }
}

/// Waits until `check` accepts the description of `id`, and returns it.
async fn described(
    client: &Client<MemoryStore>,
    id: &str,
    check: impl Fn(&infinitic::status::Description) -> bool,
) -> infinitic::status::Description {
    let id = WorkflowId::new(id);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(description) = client.describe(&id).await.unwrap() {
            if check(&description) {
                return description;
            }
            assert!(Instant::now() < deadline, "{id}: {description:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_instance_shows_what_it_waits_on() {
    let store = MemoryStore::new();
    let worker = Worker::new(store.clone())
        .workflow(CallerImpl::default)
        .workflow(GuardianImpl::default)
        .workflow(FragileImpl::default)
        .workflow(SleeperImpl::default)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(5),
            ..WorkerConfig::default()
        })
        .start();
    let client = Client::new(store);
    let before = Timestamp::wall_clock();
    client
        .dispatch_with_id("caller", CallerStub.run())
        .await
        .unwrap();
    client
        .dispatch_with_id("guardian", GuardianStub.run())
        .await
        .unwrap();
    client
        .dispatch_with_id("sleeper", SleeperStub.run())
        .await
        .unwrap();

    // The call waits, visibly: which call, to what, since when.
    let caller = described(&client, "caller", |d| !d.waiting_on.is_empty()).await;
    assert_eq!(caller.state, WorkflowState::Running);
    let waiting = &caller.waiting_on[0];
    assert_eq!(waiting.command.to_string(), "caller/0/0");
    assert_eq!(
        waiting.what,
        Waiting::Call {
            service: "Ghost".into(),
            method: "call".into()
        }
    );
    assert!(waiting.since >= before, "{:?} < {before:?}", waiting.since);
    assert_eq!(waiting.what.to_string(), "a call to Ghost::call");

    // The parent keeps waiting on its parked child, and says why the child is parked.
    let guardian = described(&client, "guardian", |d| {
        d.waiting_on.iter().any(|w| {
            matches!(
                &w.what,
                Waiting::Child {
                    state: Some(WorkflowState::Parked(_)),
                    ..
                }
            )
        })
    })
    .await;
    assert_eq!(guardian.state, WorkflowState::Running);
    let Waiting::Child {
        id,
        workflow,
        state,
    } = &guardian.waiting_on[0].what
    else {
        panic!("{guardian:?}");
    };
    assert_eq!(
        (id.as_str(), workflow.as_str()),
        ("guardian/0/1", "Fragile")
    );
    let Some(WorkflowState::Parked(reason)) = state else {
        panic!("{state:?}");
    };
    assert!(reason.contains("a bug in the child"), "{reason}");

    // A timer shows when it fires.
    let sleeper = described(&client, "sleeper", |d| !d.waiting_on.is_empty()).await;
    let Waiting::Timer { fire_at } = sleeper.waiting_on[0].what else {
        panic!("{sleeper:?}");
    };
    assert_eq!(
        fire_at,
        sleeper.waiting_on[0].since + Duration::from_secs(3600)
    );
    worker.shutdown().await;
}
