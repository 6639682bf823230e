use infinitic::prelude::*;
use std::time::Duration;

#[workflow]
trait Reminder {
    async fn run(&self, user: String) -> u64;
}

#[derive(Default)]
struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {
    async fn run(&self, user: String) -> u64 {
        std::thread::sleep(Duration::from_secs(3600));
        user.len() as u64
    }
}

fn main() {}
