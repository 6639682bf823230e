use infinitic::prelude::*;

#[service]
struct PaymentService;

fn main() {
    let _ = PaymentService;
}
