// A worker serves a generated dispatcher, not the implementation itself: the error says so.
use infinitic::prelude::*;

#[service]
pub trait Echo {
    async fn echo(&self, n: u64) -> u64;
}

pub struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, n: u64) -> u64 {
        n
    }
}

fn main() {
    let _worker = Worker::new(MemoryStore::new()).service(EchoImpl);
}
