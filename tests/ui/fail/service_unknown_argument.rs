use infinitic::prelude::*;

#[service(nam = "Payments")]
trait PaymentService {
    async fn charge(&self, cents: u64) -> bool;
}

fn main() {}
