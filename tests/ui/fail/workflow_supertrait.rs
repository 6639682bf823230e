// Methods of a supertrait would be missing from the stub: a supertrait is refused, by name.
use infinitic::prelude::*;

pub trait Audited {
    fn audit(&self) -> String;
}

#[workflow]
pub trait Checkout: Audited {
    async fn run(&self, order: u64) -> u64;
}

fn main() {}
