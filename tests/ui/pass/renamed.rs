// `#[service(name = ..)]` and `#[workflow(name = ..)]` set the registered names (for versioned
// renames); the Rust names of the trait, stub and dispatcher are unchanged.
use infinitic::prelude::*;
use infinitic::WorkflowDefinition;

#[service(name = "Inventory.v2")]
pub trait Stock {
    async fn reserve(&self, sku: String) -> bool;
}

pub struct Warehouse;

impl Stock for Warehouse {
    async fn reserve(&self, sku: String) -> bool {
        !sku.is_empty()
    }
}

#[workflow(name = "OrderFlow.v3")]
pub trait Ordering {
    async fn place(&self, sku: String) -> bool;
}

#[derive(Default)]
pub struct OrderingImpl {
    stock: StockStub,
}

#[workflow]
impl Ordering for OrderingImpl {
    async fn place(&self, sku: String) -> bool {
        self.stock.reserve(sku).await.unwrap_or(false)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(StockStub::NAME, "Inventory.v2");
    assert_eq!(StockStub::METHODS, ["reserve"]);
    assert_eq!(OrderingStub::NAME, "OrderFlow.v3");
    assert_eq!(OrderingStub::METHODS, ["place"]);

    // The impl registers under the trait's name.
    assert_eq!(
        WorkflowFactory::new(OrderingImpl::default).name(),
        "OrderFlow.v3"
    );
    let call = OrderingStub.place("apple".into());
    assert_eq!((call.workflow(), call.method()), ("OrderFlow.v3", "place"));
    let step = StockStub.reserve("apple".into());
    assert_eq!((step.service(), step.method()), ("Inventory.v2", "reserve"));

    // The renamed service is reached under its new name, and history records the new names.
    let run = WorkflowTester::new()
        .service(StockDispatcher::new(Warehouse))
        .run(OrderingImpl::default, OrderingStub.place("apple".into()))
        .await
        .expect("completes");
    assert!(run.output);
    assert_eq!(run.history.workflow, "OrderFlow.v3");
}
