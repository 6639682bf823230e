use infinitic::prelude::*;

#[service]
trait Reporter {
    async fn report(&self, lines: impl IntoIterator<Item = String>) -> u32;
}

fn main() {}
