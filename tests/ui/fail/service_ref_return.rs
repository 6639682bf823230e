use infinitic::prelude::*;

#[service]
trait Catalog {
    async fn title(&self, id: u64) -> &'static str;
}

fn main() {}
