use infinitic::prelude::*;

#[service(name = "")]
trait PaymentService {
    async fn charge(&self, cents: u64) -> bool;
}

fn main() {}
