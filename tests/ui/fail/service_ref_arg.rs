use infinitic::prelude::*;

#[service]
trait Mailer {
    async fn send(&self, to: &str, body: String) -> bool;
}

fn main() {}
