use infinitic::prelude::*;

#[service]
trait Shipping {
    async fn ship(self, order: u64) -> bool;
}

fn main() {}
