//! Publishing: one producer per Pulsar topic, messages pipelined (every message of a publish
//! in flight at once, concurrent publishers sharing a producer), a bound on unconfirmed sends
//! for back-pressure, and confirmation by the broker before a publish returns.
//!
//! The client's batch container is not used: in a batch, a message's `deliver_at` is dropped
//! (timers would fire at once), a Key_Shared subscription routes a whole batch by one key
//! (breaking ownership by workflow id), and acknowledging one message of a batch acknowledges
//! the whole entry in this client. Pipelining gives the throughput instead (see the benchmark).

use super::connect::{unavailable, Client};
use crate::store::StoreError;
use pulsar::producer::Message;
use pulsar::{Producer, ProducerOptions, TokioExecutor};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Mutex, Semaphore};

type OneProducer = Arc<Mutex<Producer<TokioExecutor>>>;

/// The transport's producers.
pub(crate) struct Producers {
    client: Client,
    by_topic: Mutex<HashMap<String, OneProducer>>,
    /// One permit per message sent and not yet confirmed.
    pending: Arc<Semaphore>,
}

impl Producers {
    pub(crate) fn new(client: Client, max_pending: usize) -> Self {
        Self {
            client,
            by_topic: Mutex::new(HashMap::new()),
            pending: Arc::new(Semaphore::new(max_pending.max(1))),
        }
    }

    async fn producer(&self, topic: &str) -> Result<OneProducer, StoreError> {
        let mut by_topic = self.by_topic.lock().await;
        if let Some(producer) = by_topic.get(topic) {
            return Ok(Arc::clone(producer));
        }
        let producer = self
            .client
            .producer()
            .with_topic(topic)
            .with_options(ProducerOptions {
                // No batch container (see the module doc), block rather than fail when the
                // connection's outbound queue is full.
                block_queue_if_full: true,
                ..ProducerOptions::default()
            })
            .build()
            .await
            .map_err(|e| unavailable(&format!("cannot create a producer for {topic}"), e))?;
        let producer = Arc::new(Mutex::new(producer));
        by_topic.insert(topic.to_string(), Arc::clone(&producer));
        Ok(producer)
    }

    /// Sends every message, then waits until the broker confirmed them all. On an error some
    /// may have been published (a publish is at-least-once: consumers are idempotent).
    pub(crate) async fn send(&self, messages: Vec<(String, Message)>) -> Result<(), StoreError> {
        let mut receipts = Vec::with_capacity(messages.len());
        let mut failed = None;
        for (topic, message) in messages {
            let permit = Arc::clone(&self.pending)
                .acquire_owned()
                .await
                .map_err(|_| StoreError::Closed)?;
            let producer = match self.producer(&topic).await {
                Ok(producer) => producer,
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            };
            let sent = producer.lock().await.send_non_blocking(message).await;
            match sent {
                Ok(receipt) => receipts.push((topic, receipt, permit)),
                Err(error) => {
                    failed = Some(unavailable(&format!("cannot publish on {topic}"), error));
                    break;
                }
            }
        }
        for (topic, receipt, permit) in receipts {
            let confirmed = receipt.await;
            drop(permit);
            if let Err(error) = confirmed {
                failed.get_or_insert(unavailable(
                    &format!("publish on {topic} not confirmed"),
                    error,
                ));
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Closes every producer (their pending sends were awaited by `send`).
    pub(crate) async fn close(&self) {
        let producers: Vec<OneProducer> =
            self.by_topic.lock().await.drain().map(|(_, p)| p).collect();
        for producer in producers {
            let _ = producer.lock().await.close().await;
        }
    }
}
