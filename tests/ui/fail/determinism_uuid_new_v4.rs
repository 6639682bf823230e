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
        let _ = user;
        uuid::Uuid::new_v4().as_u128() as u64
    }
}

fn main() {}
