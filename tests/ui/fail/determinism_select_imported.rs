use infinitic::prelude::*;
use tokio::select;

#[workflow]
trait Reminder {
    async fn run(&self, user: String) -> u64;
}

#[derive(Default)]
struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {
    async fn run(&self, user: String) -> u64 {
        select! {
            n = async { user.len() as u64 } => n,
            _ = std::future::pending::<()>() => 0,
        }
    }
}

fn main() {}
