use infinitic::prelude::*;

#[service]
trait Storage {
    type Key;
    async fn get(&self, key: String) -> Option<String>;
}

fn main() {}
