// A realistic file: the service is implemented and used by a workflow, and one method is
// wrong. Only that method is reported; the stub, the dispatcher and the other methods still
// exist, so the rest of the file checks normally (and IDE completion keeps working).
use infinitic::prelude::*;

#[service]
pub trait Counter {
    async fn get(&self, key: String) -> u64;
    async fn increment(&mut self, key: String) -> u64;
}

struct InMemory;

impl Counter for InMemory {
    async fn get(&self, _key: String) -> u64 {
        0
    }
    async fn increment(&mut self, _key: String) -> u64 {
        1
    }
}

#[workflow]
pub trait Visits {
    async fn count(&self, page: String) -> u64;
}

#[derive(Default)]
pub struct VisitsImpl {
    counter: CounterStub,
}

#[workflow]
impl Visits for VisitsImpl {
    async fn count(&self, page: String) -> u64 {
        self.counter.get(page).await.unwrap_or(0)
    }
}

fn main() {
    let _ = CounterDispatcher::new(InMemory);
}
