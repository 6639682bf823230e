use infinitic::prelude::*;

#[workflow]
trait Reminder {
    async fn run(&self, user: String) -> u64;
}

#[derive(Default)]
struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {
    async fn run(&self, user: String) -> u64 {
        let region = std::env::var("REGION").unwrap_or_default();
        (user.len() + region.len()) as u64
    }
}

fn main() {}
