//! Helpers for tests of bad input: raw messages, the dead letters' reasons, and a workflow
//! step's result shown as text.

use infinitic::prelude::*;
use infinitic::store::Outgoing;
use infinitic::{Timestamp, Transport};
use std::time::Duration;

/// A step's result as text: `ok value` or the typed error.
pub fn show<T: std::fmt::Debug, E: std::fmt::Debug>(r: Result<T, StepError<E>>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("{e:?}"),
    }
}

/// A message of any bytes, deliverable at once.
pub fn raw(topic: &str, key: &str, payload: Vec<u8>) -> Outgoing {
    Outgoing::new(topic, key, payload, Timestamp::from_millis(0))
}

/// The reasons of the dead letters, newest first.
pub async fn reasons(transport: &impl Transport) -> Vec<String> {
    let letters = transport.dead_letters(100).await.unwrap();
    letters.into_iter().map(|d| d.reason).collect()
}

/// Waits (up to 10 s) until there are at least `count` dead letters; their reasons.
pub async fn wait_for(transport: &impl Transport, count: usize) -> Vec<String> {
    for _ in 0..1000 {
        let found = reasons(transport).await;
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {count} dead letters, got {:?}",
        reasons(transport).await
    );
}
