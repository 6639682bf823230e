use infinitic::prelude::*;

#[service]
trait Inventory {
    fn reserve(&self, sku: String, quantity: u32) -> bool;
}

fn main() {}
