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
        let handle = tokio::spawn(async move { user.len() as u64 });
        handle.await.unwrap_or(0)
    }
}

fn main() {}
