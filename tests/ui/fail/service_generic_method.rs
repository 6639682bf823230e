use infinitic::prelude::*;

#[service]
trait Converter {
    async fn convert<T>(&self, value: T) -> String;
}

fn main() {}
