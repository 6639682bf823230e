//! Child workflows: a parent starts two children in parallel, each calling a service, and
//! combines their results; the children are instances of their own, found by their ids.

use crate::{finish, retries, Deployment};
use infinitic::prelude::*;
use std::time::Duration;

#[service]
pub trait Arithmetic {
    async fn square(&self, n: u64) -> u64;
}

struct ArithmeticImpl;

impl Arithmetic for ArithmeticImpl {
    async fn square(&self, n: u64) -> u64 {
        n * n
    }
}

#[workflow]
pub trait Square {
    async fn run(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct SquareImpl {
    arithmetic: ArithmeticStub,
}

#[workflow]
impl Square for SquareImpl {
    async fn run(&self, n: u64) -> u64 {
        self.arithmetic.square(n).await.unwrap_or(0)
    }
}

#[workflow]
pub trait SumOfSquares {
    /// `a² + b²`, each square computed by a child.
    async fn run(&self, a: u64, b: u64) -> Result<u64, String>;
}

#[derive(Default)]
pub struct SumOfSquaresImpl {
    child: SquareStub,
}

#[workflow]
impl SumOfSquares for SumOfSquaresImpl {
    async fn run(&self, a: u64, b: u64) -> Result<u64, String> {
        let (a, b) = workflow::join2(self.child.run(a), self.child.run(b)).await;
        Ok(a.map_err(|e| e.to_string())? + b.map_err(|e| e.to_string())?)
    }
}

pub async fn a_parent_awaits_two_children_and_combines_their_results<D: Deployment>(d: D) {
    let worker = d.start(retries(3, Duration::from_millis(50)), |w| {
        w.service(ArithmeticDispatcher::new(ArithmeticImpl))
            .workflow(SquareImpl::default)
            .workflow(SumOfSquaresImpl::default)
    });
    let client = d.client();
    let handle = client
        .dispatch_with_id("parent-1", SumOfSquaresStub.run(3, 4))
        .await
        .unwrap();
    assert_eq!(finish(&d, &handle).await, Ok(25));
    // The children's ids derive from the parent's commands (run 0, positions 0 and 1).
    for (position, expected) in [(0, 9), (1, 16)] {
        let child = client.handle::<u64>(format!("parent-1/0/{position}"));
        assert_eq!(finish(&d, &child).await, expected);
    }
    d.stop(worker).await;
}
