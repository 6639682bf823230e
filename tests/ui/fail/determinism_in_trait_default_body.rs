// A default body in a #[workflow] trait runs as workflow code, so it is checked too.
use infinitic::prelude::*;

#[workflow]
trait Reminder {
    async fn run(&self, user: String) -> u64 {
        let _ = user;
        std::time::Instant::now().elapsed().as_secs()
    }
}

#[derive(Default)]
struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {}

fn main() {}
