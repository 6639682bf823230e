// An argument travels as a message, so its type must be serializable: one error, at the type.
use infinitic::prelude::*;

pub struct Card {
    pub number: String,
}

#[service]
pub trait Payments {
    async fn charge(&self, card: Card, cents: u64) -> bool;
}

fn main() {}
