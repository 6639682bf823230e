// Inside an inline step, reading the clock is allowed (its value is recorded), but I/O still
// belongs in a service.
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
        let started: u64 = workflow::inline(|| {
            let now = std::time::SystemTime::now();
            now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        });
        let template: String =
            workflow::inline(|| std::fs::read_to_string("welcome.txt").unwrap_or_default());
        started + (user.len() + template.len()) as u64
    }
}

fn main() {}
