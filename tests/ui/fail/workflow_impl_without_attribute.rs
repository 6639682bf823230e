// An impl of a workflow trait needs `#[workflow]` too (it registers the implementation and
// checks its code for determinism): the error says so.
use infinitic::prelude::*;

#[workflow]
pub trait Greeting {
    async fn run(&self, name: String) -> String;
}

#[derive(Default)]
pub struct GreetingImpl;

impl Greeting for GreetingImpl {
    async fn run(&self, name: String) -> String {
        format!("hello {name}")
    }
}

fn main() {
    let _worker = Worker::new(MemoryStore::new()).workflow(GreetingImpl::default);
}
