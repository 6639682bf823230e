use infinitic::prelude::*;

#[workflow]
trait Reminder {
    async fn run(&self, user: String) -> u64;
}

#[derive(Default)]
struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {
    #[allow_nondeterministic("")]
    async fn run(&self, user: String) -> u64 {
        let started = std::time::Instant::now();
        let _ = user;
        started.elapsed().as_secs()
    }
}

fn main() {}
