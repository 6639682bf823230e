use infinitic::prelude::*;
use std::net::TcpStream;

#[workflow]
trait Reminder {
    async fn run(&self, user: String) -> u64;
}

#[derive(Default)]
struct ReminderImpl;

#[workflow]
impl Reminder for ReminderImpl {
    async fn run(&self, user: String) -> u64 {
        let connected = TcpStream::connect("mail.example.com:25").is_ok();
        user.len() as u64 + u64::from(connected)
    }
}

fn main() {}
