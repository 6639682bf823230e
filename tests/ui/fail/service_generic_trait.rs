use infinitic::prelude::*;

#[service]
trait Repository<T> {
    async fn load(&self, id: u64) -> Option<String>;
}

fn main() {}
