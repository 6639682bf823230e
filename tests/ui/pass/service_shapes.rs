// Every supported service signature shape: no arguments, one argument, many arguments, unit
// return (no `->`), custom serde structs and enums, collections, tuples. The workflow calls
// each one through the generated stub and the test runs it in-process.
use infinitic::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Priority {
    Normal,
    Rush { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Quote {
    Accepted { cents: u64 },
    Rejected(String),
}

#[service]
pub trait Shop {
    /// No arguments.
    async fn ping(&self) -> String;
    /// One argument, no return type.
    async fn touch(&self, order_id: u64);
    /// Many arguments.
    async fn label(&self, prefix: String, id: u64, copies: u8, fragile: bool) -> String;
    /// Custom serde struct and enum in, enum out.
    async fn quote(&self, order: Order, priority: Priority) -> Quote;
    /// Collections in and out.
    async fn restock(
        &self,
        skus: Vec<String>,
        coupon: Option<String>,
        stock: BTreeMap<String, u32>,
    ) -> BTreeMap<String, u32>;
    /// Tuples and nested generics.
    async fn split(&self, pair: (String, u64)) -> (Vec<Option<u64>>, String);
}

/// The implementation workers run.
pub struct RealShop;

impl Shop for RealShop {
    async fn ping(&self) -> String {
        "pong".to_string()
    }

    async fn touch(&self, _order_id: u64) {}

    async fn label(&self, prefix: String, id: u64, copies: u8, fragile: bool) -> String {
        let care = if fragile { " (fragile)" } else { "" };
        format!("{prefix}-{id} x{copies}{care}")
    }

    async fn quote(&self, order: Order, priority: Priority) -> Quote {
        let items: u64 = order.lines.iter().map(|l| u64::from(l.quantity)).sum();
        match priority {
            Priority::Normal => Quote::Accepted { cents: items * 100 },
            Priority::Rush { reason } => Quote::Rejected(format!("no rush for {reason}")),
        }
    }

    async fn restock(
        &self,
        skus: Vec<String>,
        coupon: Option<String>,
        mut stock: BTreeMap<String, u32>,
    ) -> BTreeMap<String, u32> {
        let extra = if coupon.is_some() { 2 } else { 1 };
        for sku in skus {
            *stock.entry(sku).or_insert(0) += extra;
        }
        stock
    }

    async fn split(&self, pair: (String, u64)) -> (Vec<Option<u64>>, String) {
        (vec![Some(pair.1), None], pair.0)
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub ping: String,
    pub label: String,
    pub quotes: Vec<Quote>,
    pub stock: BTreeMap<String, u32>,
    pub split: (Vec<Option<u64>>, String),
}

#[workflow]
pub trait Checkout {
    async fn run(&self, order: Order) -> Summary;
}

#[derive(Default)]
pub struct CheckoutImpl {
    shop: ShopStub,
}

#[workflow]
impl Checkout for CheckoutImpl {
    async fn run(&self, order: Order) -> Summary {
        let ping = self.shop.ping().await.unwrap_or_default();
        // A unit method yields `Result<(), StepError<NoError>>`.
        let touched: Result<(), StepError<NoError>> = self.shop.touch(order.id).await;
        assert!(touched.is_ok());
        let label = self
            .shop
            .label("PKG".to_string(), order.id, 2, true)
            .await
            .unwrap_or_default();
        let normal = self.shop.quote(order.clone(), Priority::Normal).await;
        let rush = self
            .shop
            .quote(
                order.clone(),
                Priority::Rush {
                    reason: "Ada".into(),
                },
            )
            .await;
        let skus = order.lines.iter().map(|l| l.sku.clone()).collect();
        let mut stock = BTreeMap::new();
        stock.insert("apple".to_string(), 5);
        let stock = self
            .shop
            .restock(skus, Some("SPRING".into()), stock)
            .await
            .unwrap_or_default();
        let split = self
            .shop
            .split(("tail".to_string(), 7))
            .await
            .unwrap_or_default();
        Summary {
            ping,
            label,
            quotes: vec![
                normal.unwrap_or(Quote::Rejected("failed".into())),
                rush.unwrap_or(Quote::Rejected("failed".into())),
            ],
            stock,
            split,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(ShopStub::NAME, "Shop");
    assert_eq!(
        ShopStub::METHODS,
        ["ping", "touch", "label", "quote", "restock", "split"]
    );
    assert_eq!(CheckoutStub::NAME, "Checkout");
    assert_eq!(CheckoutStub::METHODS, ["run"]);

    let order = Order {
        id: 42,
        lines: vec![
            Line {
                sku: "apple".into(),
                quantity: 3,
            },
            Line {
                sku: "pear".into(),
                quantity: 1,
            },
        ],
    };
    let run = WorkflowTester::new()
        .service(ShopDispatcher::new(RealShop))
        .run(CheckoutImpl::default, CheckoutStub.run(order))
        .await
        .expect("the workflow completes");

    let mut stock = BTreeMap::new();
    stock.insert("apple".to_string(), 7);
    stock.insert("pear".to_string(), 2);
    assert_eq!(
        run.output,
        Summary {
            ping: "pong".into(),
            label: "PKG-42 x2 (fragile)".into(),
            quotes: vec![
                Quote::Accepted { cents: 400 },
                Quote::Rejected("no rush for Ada".into()),
            ],
            stock,
            split: (vec![Some(7), None], "tail".into()),
        }
    );
}
