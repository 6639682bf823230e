// A workflow's argument travels in its start message: one error, at the type.
use infinitic::prelude::*;

pub struct Order {
    pub id: u64,
}

#[workflow]
pub trait Checkout {
    async fn run(&self, order: Order) -> u64;
}

fn main() {}
