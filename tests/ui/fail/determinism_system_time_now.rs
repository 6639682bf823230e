use infinitic::prelude::*;
use std::time::SystemTime;

#[workflow]
trait Reminder {
    async fn run(&self, user: String) -> u64;
}

#[derive(Default)]
struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {
    async fn run(&self, user: String) -> u64 {
        let sent_at = SystemTime::now();
        let _ = (user, sent_at);
        1
    }
}

fn main() {}
