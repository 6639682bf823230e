// Methods of a supertrait would be missing from the stub and the dispatcher: refused, by name.
use infinitic::prelude::*;

#[service]
pub trait Payments: Clone + Send {
    async fn charge(&self, cents: u64) -> bool;
}

fn main() {}
