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
        println!("{user} reminded at {:?}", std::time::SystemTime::now());
        1
    }
}

fn main() {}
