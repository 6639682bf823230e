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
        let template = std::fs::read_to_string("welcome.txt").unwrap_or_default();
        (user.len() + template.len()) as u64
    }
}

fn main() {}
