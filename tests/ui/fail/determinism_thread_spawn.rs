use infinitic::prelude::*;
use std::thread;

#[workflow]
trait Reminder {
    async fn run(&self, user: String) -> u64;
}

#[derive(Default)]
struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {
    async fn run(&self, user: String) -> u64 {
        let handle = thread::spawn(move || user.len() as u64);
        handle.join().unwrap_or(0)
    }
}

fn main() {}
