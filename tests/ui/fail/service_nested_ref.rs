use infinitic::prelude::*;

#[service]
trait Mailer {
    async fn send_all(&self, recipients: Vec<&'static str>) -> u32;
}

fn main() {}
