use infinitic::prelude::*;

#[service]
trait Pricing {
    async fn price(sku: String) -> u64;
}

fn main() {}
