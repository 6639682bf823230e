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
        let mut seen = std::collections::HashSet::new();
        seen.insert(user);
        seen.len() as u64
    }
}

fn main() {}
