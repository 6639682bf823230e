// The workflow-safe API: the workflow clock, durable timers, deterministic randomness and ids,
// and deterministic parallel composition.
use infinitic::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

#[service]
pub trait Echo {
    async fn echo(&self, value: u64) -> u64;
    async fn name(&self) -> String;
}

pub struct Mirror;

impl Echo for Mirror {
    async fn echo(&self, value: u64) -> u64 {
        value
    }

    async fn name(&self) -> String {
        "mirror".into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub random: u64,
    pub in_range: u64,
    pub uuid: String,
    pub slept_secs: u64,
    pub joined: Vec<u64>,
    pub first: (usize, u64),
    pub left_won: bool,
    pub pair: (u64, String),
}

#[workflow]
pub trait Tour {
    async fn run(&self) -> Report;
}

#[derive(Default)]
pub struct TourImpl {
    echo: EchoStub,
}

#[workflow]
impl Tour for TourImpl {
    async fn run(&self) -> Report {
        let start: SystemTime = workflow::now();
        assert_eq!(SystemTime::from(workflow::timestamp()), start);

        workflow::sleep(Duration::from_secs(60)).await;
        workflow::sleep_until(workflow::now() + Duration::from_secs(3600)).await;
        let slept = workflow::now()
            .duration_since(start)
            .map_or(0, |d| d.as_secs());

        let joined = workflow::join_all((1..=3).map(|i| self.echo.echo(i)))
            .await
            .into_iter()
            .map(|r| r.unwrap_or(0))
            .collect();
        let (index, value) = workflow::select(vec![self.echo.echo(10), self.echo.echo(20)]).await;
        let raced = workflow::select2(
            self.echo.echo(1),
            workflow::sleep(Duration::from_secs(86_400)),
        )
        .await;
        let left_won = matches!(raced, Either::Left(Ok(1)));
        let (number, name) = workflow::join2(self.echo.echo(5), self.echo.name()).await;

        Report {
            id: workflow::id().to_string(),
            random: workflow::random(),
            in_range: workflow::random_range(10..20),
            uuid: workflow::uuid().to_string(),
            slept_secs: slept,
            joined,
            first: (index, value.unwrap_or(0)),
            left_won,
            pair: (number.unwrap_or(0), name.unwrap_or_default()),
        }
    }
}

async fn run(id: &str) -> Report {
    WorkflowTester::new()
        .with_id(id)
        .service(EchoDispatcher::new(Mirror))
        .run(TourImpl::default, TourStub.run())
        .await
        .expect("completes")
        .output
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let report = run("tour-1").await;
    assert_eq!(report.id, "tour-1");
    assert_eq!(report.slept_secs, 3660);
    assert_eq!(report.joined, [1, 2, 3]);
    assert_eq!(report.first, (0, 10));
    assert!(report.left_won);
    assert_eq!(report.pair, (5, "mirror".to_string()));
    assert!((10..20).contains(&report.in_range));
    assert_eq!(report.uuid.len(), 36);
    assert_eq!(
        report.uuid.as_bytes()[14],
        b'4',
        "a version 4 uuid: {}",
        report.uuid
    );

    // Randomness is a function of the instance: the same id gives the same values.
    assert_eq!(run("tour-1").await, report);
    let other = run("tour-2").await;
    assert_ne!((other.random, other.uuid), (report.random, report.uuid));
}
