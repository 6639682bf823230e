use infinitic::prelude::*;
use std::collections::HashMap;

#[workflow]
trait Reminder {
    async fn run(&self, user: String) -> u64;
}

#[derive(Default)]
struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {
    async fn run(&self, user: String) -> u64 {
        let mut seen: HashMap<String, u64> = Default::default();
        seen.insert(user, 1);
        seen.values().sum()
    }
}

fn main() {}
