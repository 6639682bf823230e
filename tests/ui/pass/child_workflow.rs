// A workflow starts another workflow as a child through the child's generated stub; awaiting
// the call yields the child's result or a `StepError`.
use infinitic::prelude::*;

#[workflow]
pub trait Square {
    async fn square(&self, n: u64) -> u64;
}

#[derive(Default)]
pub struct SquareImpl;

#[workflow]
impl Square for SquareImpl {
    async fn square(&self, n: u64) -> u64 {
        n * n
    }
}

#[workflow]
pub trait SumOfSquares {
    async fn run(&self, numbers: Vec<u64>) -> Result<u64, StepError<NoError>>;
}

#[derive(Default)]
pub struct SumOfSquaresImpl {
    square: SquareStub,
}

#[workflow]
impl SumOfSquares for SumOfSquaresImpl {
    async fn run(&self, numbers: Vec<u64>) -> Result<u64, StepError<NoError>> {
        let first = match numbers.first() {
            Some(n) => self.square.square(*n).await?,
            None => return Ok(0),
        };
        let rest = workflow::join_all(numbers[1..].iter().map(|n| self.square.square(*n))).await;
        let mut total = first;
        for r in rest {
            total += r?;
        }
        Ok(total)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let run = WorkflowTester::new()
        .child_workflow(SquareImpl::default)
        .run(
            SumOfSquaresImpl::default,
            SumOfSquaresStub.run(vec![1, 2, 3]),
        )
        .await
        .expect("completes");
    assert_eq!(run.output, Ok(14));

    // Without the child registered, the parent waits for a worker that runs it, and says so.
    let result = WorkflowTester::new()
        .run(SumOfSquaresImpl::default, SumOfSquaresStub.run(vec![4]))
        .await;
    let Err(infinitic::TesterError::Waiting { description, .. }) = result else {
        panic!("the parent should wait, got {result:?}");
    };
    assert!(
        description.to_string().contains("not started yet"),
        "{description}"
    );
}
