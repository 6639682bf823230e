//! Counting deliveries, and redeliveries (a message, by topic and payload, delivered before):
//! what the broker-crash tests report.

use infinitic::store::Delivery;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Deliveries seen, and how many were of a message delivered before.
#[derive(Default)]
pub struct Redeliveries {
    pub deliveries: AtomicU64,
    pub redeliveries: AtomicU64,
    seen: Mutex<HashSet<u64>>,
}

impl Redeliveries {
    /// Counts `delivered`, a batch one receive returned.
    pub fn record(&self, delivered: &[Delivery]) {
        self.deliveries
            .fetch_add(delivered.len() as u64, Ordering::Relaxed);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for delivery in delivered {
            let mut hasher = DefaultHasher::new();
            (&delivery.topic, &delivery.payload).hash(&mut hasher);
            if !seen.insert(hasher.finish()) {
                self.redeliveries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
