//! The Apache Pulsar transport (feature `pulsar`): messages between clients, workflow workers
//! and service workers travel over a Pulsar broker. Workflow state lives in a separate
//! [`crate::store::StateStore`] ([`crate::worker::Worker::with_backends`]).
//!
//! # Design
//!
//! - **Topics** ([`topics`](self) layout): each runtime topic (`workflow:Name`,
//!   `service:Name`) is one persistent Pulsar topic `{prefix}.workflow.Name` /
//!   `{prefix}.service.Name` in [`PulsarOptions::namespace`], plus a dead-letter companion
//!   `…-dlq`: two topics per workflow and per service. Timers and retry backoffs are delayed
//!   messages on the same topic, not topics of their own. Topics are created on first use.
//! - **Key**: a message's [`Outgoing::key`] is its Pulsar partition key: the workflow id on
//!   workflow topics.
//! - **Subscriptions**: every worker of a deployment shares one subscription
//!   ([`PulsarOptions::subscription`]). Workflow topics use **Key_Shared**: the broker gives
//!   each key (workflow id) to one consumer at a time, in order, so one worker owns an
//!   instance at a time and its cache of live workflows stays valid; the state store's
//!   compare-and-set still guards the moment keys move between consumers. Service topics use
//!   **Shared**: any worker may run any task. Both support delayed delivery (Exclusive does
//!   not). A new subscription starts at the oldest message.
//! - **Delays**: a message whose `deliver_at` is in the future is published with Pulsar's
//!   `deliver_at` and is dispatched when due (the broker's `delayedDeliveryTickTimeMillis`
//!   sets the precision; `scripts/pulsar.sh` uses 10 ms).
//! - **Leases and redelivery**: a received message is leased for the `lease` given to
//!   [`Transport::receive`]; a lease not settled in time is negatively acknowledged, and the
//!   broker delivers it again (to this consumer or another one of its key). A lease is held in
//!   memory: [`DeliveryId`] maps to the Pulsar message id. `Retry { at }` publishes a copy
//!   delayed to `at` (carrying the attempt count in a property) and acknowledges the
//!   original, or negatively acknowledges it when `at` is now. The attempt count is that
//!   property plus the deliveries this process saw; deliveries seen by a crashed process are
//!   not counted.
//! - **Dead letters**: `DeadLetter { reason }` publishes the payload on the `-dlq` companion
//!   with the reason and the runtime topic in properties, then acknowledges the original;
//!   [`Transport::dead_letters`] reads the companions back with readers.
//! - **At-least-once**: a settlement publishes what it carries, waits for the broker's
//!   confirmation, then acknowledges. A crash in between, a lease that expires, a broker
//!   restart or a reconnect deliver a message again — after a broker SIGKILL, hundreds to
//!   thousands of messages. Consumers are idempotent: the state store records the ids of
//!   consumed messages, and a service task run twice reports an outcome the workflow already
//!   has.
//! - **Publishing**: one producer per topic, all messages of a publish in flight at once,
//!   at most [`PulsarOptions::max_pending_sends`] unconfirmed (back-pressure); a publish
//!   returns once the broker confirmed every message. Messages above
//!   [`Transport::max_message_bytes`] are refused whole before anything is sent.
//! - **Failures**: connecting is bounded by [`PulsarOptions::startup_timeout`] and fails with
//!   [`StoreError::Broker`] (unreachable broker, refused token, TLS). Afterwards the client
//!   reconnects by itself, a consumer whose stream ends subscribes again, and errors are
//!   [`StoreError::Unavailable`] (workers retry them).
//!
//! ```no_run
//! use infinitic_runtime::store::pulsar::{PulsarOptions, PulsarTransport};
//! use infinitic_runtime::store::memory_state::MemoryStateStore;
//! use infinitic_runtime::worker::Worker;
//! # async fn demo() -> Result<(), infinitic_runtime::store::StoreError> {
//! let transport = PulsarTransport::connect(PulsarOptions::new("pulsar://127.0.0.1:6650")).await?;
//! let running = Worker::with_backends(transport.clone(), MemoryStateStore::new())
//!     /* .service(..).workflow(..) */
//!     .start();
//! running.shutdown().await;
//! transport.close().await;
//! # Ok(())
//! # }
//! ```

mod connect;
mod consumer;
mod dead_letters;
mod options;
mod producer;
mod topics;

pub use options::PulsarOptions;

use crate::store::{
    Activity, DeadLetter, Delivery, DeliveryId, Outgoing, Received, Settlement, StoreError,
    Transport,
};
use connect::Client;
use consumer::{Incoming, Subscribe, TopicConsumer, ATTEMPTS_PROPERTY};
use infinitic_core::Timestamp;
use producer::Producers;
use pulsar::message::proto::MessageIdData;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use topics::TopicLayout;

/// How far ahead of this host's clock a message may be due and still be sent as an immediate
/// one (see [`PulsarTransport`]'s `publish`): the clock offsets of hosts kept in sync.
const IMMEDIATE_TOLERANCE: Duration = Duration::from_millis(20);

/// How often expired leases are looked for.
const LEASE_SWEEP: Duration = Duration::from_millis(20);

/// A `Retry` due within this much is a negative acknowledgement (redelivered at once) rather
/// than a delayed copy.
const RETRY_NOW: Duration = Duration::from_millis(5);

/// The Pulsar transport. Cheap to clone; clones share the connection, producers, consumers
/// and leases. See the [module documentation](self) for the design.
#[derive(Clone)]
pub struct PulsarTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PulsarTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulsarTransport")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

struct Inner {
    options: PulsarOptions,
    client: Client,
    producers: Producers,
    /// By runtime topic name.
    consumers: Mutex<HashMap<String, Arc<TopicConsumer>>>,
    leases: Mutex<Leases>,
    activity: Arc<watch::Sender<u64>>,
    next_delivery: AtomicU64,
    consumer_name: String,
    closed: AtomicBool,
}

/// A delivered message until it is settled.
#[derive(Clone)]
struct Lease {
    consumer: Arc<TopicConsumer>,
    id: MessageIdData,
    key: String,
    payload: Vec<u8>,
    attempt: u32,
    deadline: Instant,
}

/// Where a message is in its topic, to count its deliveries.
type Position = (String, u64, u64, i32, i32);

fn position(topic: &str, id: &MessageIdData) -> Position {
    (
        topic.to_string(),
        id.ledger_id,
        id.entry_id,
        id.partition.unwrap_or(-1),
        id.batch_index.unwrap_or(-1),
    )
}

#[derive(Default)]
struct Leases {
    by_delivery: HashMap<DeliveryId, Lease>,
    /// Deliveries seen by this process of messages not settled yet.
    seen: HashMap<Position, u32>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PulsarTransport {
    /// Connects to the broker, within [`PulsarOptions::startup_timeout`]: an unreachable
    /// broker, a refused token or a TLS failure is a [`StoreError::Broker`] naming the cause.
    pub async fn connect(options: PulsarOptions) -> Result<Self, StoreError> {
        // Two clients, so two TCP connections: one publishes, one consumes. On a shared
        // connection an acknowledgement (a write the broker does not answer) followed by a
        // publish waits for the acknowledgement's TCP ACK (Nagle's algorithm; the client does
        // not set TCP_NODELAY), about 40 ms of delayed ACK per message.
        let client = connect::connect(&options).await?;
        let publisher = connect::connect(&options).await?;
        let (activity, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            producers: Producers::new(publisher, options.max_pending_sends),
            client,
            options,
            consumers: Mutex::new(HashMap::new()),
            leases: Mutex::new(Leases::default()),
            activity: Arc::new(activity),
            next_delivery: AtomicU64::new(1),
            consumer_name: format!("infinitic-{}", uuid::Uuid::new_v4().simple()),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(sweep_leases(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The settings it was connected with.
    pub fn options(&self) -> &PulsarOptions {
        &self.inner.options
    }

    /// Shuts down: acknowledgements queued so far are sent, consumers and producers closed.
    /// Messages still leased go back to the broker (it redelivers what a closed consumer did
    /// not acknowledge). Call it after the workers using this transport have shut down.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let consumers: Vec<Arc<TopicConsumer>> = lock(&self.inner.consumers)
            .drain()
            .map(|(_, c)| c)
            .collect();
        for consumer in &consumers {
            consumer.close().await;
        }
        self.inner.producers.close().await;
    }

    fn layout(&self, topic: &str) -> TopicLayout {
        let o = &self.inner.options;
        TopicLayout::of(topic, &o.namespace, &o.topic_prefix)
    }

    fn check_open(&self) -> Result<(), StoreError> {
        match self.inner.closed.load(Ordering::SeqCst) {
            true => Err(StoreError::Closed),
            false => Ok(()),
        }
    }

    /// The consumer of `topic`, started on first use.
    fn consumer(&self, topic: &str) -> Arc<TopicConsumer> {
        let mut consumers = lock(&self.inner.consumers);
        if let Some(consumer) = consumers.get(topic) {
            return Arc::clone(consumer);
        }
        let consumer = Arc::new(TopicConsumer::spawn(
            self.layout(topic),
            Subscribe {
                client: self.inner.client.clone(),
                subscription: self.inner.options.subscription.clone(),
                consumer_name: self.inner.consumer_name.clone(),
                capacity: self.inner.options.receive_buffer,
                activity: Arc::clone(&self.inner.activity),
            },
        ));
        consumers.insert(topic.to_string(), Arc::clone(&consumer));
        consumer
    }

    /// Checks every message's size, then converts them for the producers.
    fn prepare(
        &self,
        messages: Vec<Outgoing>,
        properties: impl Fn(&Outgoing) -> HashMap<String, String>,
    ) -> Result<Vec<(String, pulsar::producer::Message)>, StoreError> {
        let limit = self.inner.options.max_message_bytes();
        if let Some(m) = messages
            .iter()
            .find(|m| m.payload.len() + m.key.len() > limit)
        {
            return Err(StoreError::TooLarge {
                topic: m.topic.clone(),
                size: m.payload.len() + m.key.len(),
                limit,
            });
        }
        let now = Timestamp::wall_clock();
        Ok(messages
            .into_iter()
            .map(|m| {
                let message = pulsar::producer::Message {
                    properties: properties(&m),
                    partition_key: (!m.key.is_empty()).then(|| m.key.clone()),
                    // Due now or within the tolerance: sent as an immediate message. A
                    // sender on another clock (the database's) stamps "now" a few ms ahead of
                    // this host's; as a delayed message it would wait for the broker's next
                    // tick, behind later messages of its key. A consumer holds what comes
                    // before its time, so nothing runs early.
                    deliver_at_time: (m.deliver_at > now + IMMEDIATE_TOLERANCE)
                        .then(|| i64::try_from(m.deliver_at.as_millis()).unwrap_or(i64::MAX)),
                    payload: m.payload,
                    ..Default::default()
                };
                (self.layout(&m.topic).pulsar, message)
            })
            .collect())
    }

    /// The lease of `delivery`, if it is still held (it expired otherwise).
    fn lease(&self, delivery: DeliveryId) -> Option<Lease> {
        lock(&self.inner.leases).by_delivery.get(&delivery).cloned()
    }

    /// Ends the lease of `delivery` and acknowledges its message.
    fn ack(&self, delivery: DeliveryId) {
        let mut leases = lock(&self.inner.leases);
        if let Some(lease) = leases.by_delivery.remove(&delivery) {
            leases
                .seen
                .remove(&position(&lease.consumer.layout.pulsar, &lease.id));
            lease.consumer.ack(lease.id);
        }
    }

    async fn settle_one(&self, settlement: Settlement) -> Result<(), StoreError> {
        match settlement {
            Settlement::Ack { delivery, publish } => {
                self.publish(publish).await?;
                self.ack(delivery);
            }
            Settlement::Retry { delivery, at } => {
                let Some(Lease {
                    consumer,
                    id,
                    key,
                    payload,
                    attempt,
                    ..
                }) = self.lease(delivery)
                else {
                    return Ok(()); // expired: it is redelivered anyway
                };
                if at <= Timestamp::wall_clock() + RETRY_NOW {
                    if lock(&self.inner.leases)
                        .by_delivery
                        .remove(&delivery)
                        .is_some()
                    {
                        consumer.nack(id);
                    }
                    return Ok(());
                }
                let copy = Outgoing::new(consumer.layout.name.clone(), key, payload, at);
                let copy = self.prepare(vec![copy], |_| {
                    HashMap::from([(ATTEMPTS_PROPERTY.to_string(), attempt.to_string())])
                })?;
                self.inner.producers.send(copy).await?;
                self.ack(delivery);
            }
            Settlement::DeadLetter {
                delivery,
                reason,
                publish,
            } => {
                self.publish(publish).await?;
                let Some(Lease {
                    consumer,
                    key,
                    payload,
                    attempt,
                    ..
                }) = self.lease(delivery)
                else {
                    return Ok(()); // expired: it is redelivered and dead-lettered again
                };
                let layout = &consumer.layout;
                let message = pulsar::producer::Message {
                    payload,
                    partition_key: (!key.is_empty()).then_some(key),
                    properties: HashMap::from([
                        (dead_letters::REASON_PROPERTY.to_string(), reason),
                        (
                            dead_letters::TOPIC_PROPERTY.to_string(),
                            layout.name.clone(),
                        ),
                        (ATTEMPTS_PROPERTY.to_string(), attempt.to_string()),
                    ]),
                    ..Default::default()
                };
                self.inner
                    .producers
                    .send(vec![(layout.dead_letters.clone(), message)])
                    .await?;
                self.ack(delivery);
            }
        }
        Ok(())
    }
}

impl Transport for PulsarTransport {
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), StoreError> {
        self.check_open()?;
        if messages.is_empty() {
            return Ok(());
        }
        let prepared = self.prepare(messages, |_| HashMap::new())?;
        self.inner.producers.send(prepared).await
    }

    async fn receive(
        &self,
        topics: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Received, StoreError> {
        self.check_open()?;
        let consumers: Vec<Arc<TopicConsumer>> = topics.iter().map(|t| self.consumer(t)).collect();
        let mut received = Received::default();
        let deadline = Instant::now() + lease;
        for consumer in &consumers {
            let room = max.saturating_sub(received.deliveries.len());
            if room == 0 {
                break;
            }
            let taken = consumer.take(room);
            if taken.is_empty() {
                continue;
            }
            let mut leases = lock(&self.inner.leases);
            for Incoming {
                id,
                key,
                payload,
                earlier_attempts,
            } in taken
            {
                let seen = leases
                    .seen
                    .entry(position(&consumer.layout.pulsar, &id))
                    .or_insert(0);
                *seen += 1;
                let attempt = earlier_attempts.saturating_add(*seen);
                let delivery =
                    DeliveryId::new(self.inner.next_delivery.fetch_add(1, Ordering::Relaxed));
                received.deliveries.push(Delivery {
                    id: delivery,
                    topic: consumer.layout.name.clone(),
                    key: key.clone(),
                    payload: payload.clone(),
                    attempt,
                });
                leases.by_delivery.insert(
                    delivery,
                    Lease {
                        consumer: Arc::clone(consumer),
                        id,
                        key,
                        payload,
                        attempt,
                        deadline,
                    },
                );
            }
        }
        if received.deliveries.is_empty() {
            // Nothing buffered: say why if a consumer cannot subscribe (the broker is down).
            if let Some(reason) = consumers
                .iter()
                .filter_map(|c| c.down())
                .find(|reason| reason != "subscribing")
            {
                return Err(StoreError::Unavailable(format!("pulsar: {reason}")));
            }
        }
        Ok(received)
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), StoreError> {
        for settlement in settlements {
            self.settle_one(settlement).await?;
        }
        Ok(())
    }

    /// Fires whenever a message arrives from the broker for one of this transport's consumers.
    fn activity(&self) -> Activity {
        Activity::new(self.inner.activity.subscribe())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let o = &self.inner.options;
        // The local name's first segment: the escaped prefix and its dot.
        let local_prefix = TopicLayout::of("x", &o.namespace, &o.topic_prefix)
            .pulsar
            .rsplit('/')
            .next()
            .map(|local| local.trim_end_matches('x').to_string())
            .unwrap_or_default();
        dead_letters::read(&self.inner.client, &o.namespace, &local_prefix, limit).await
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.inner.options.max_message_bytes())
    }
}

/// Negatively acknowledges leases that expired, until the transport is dropped.
async fn sweep_leases(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(LEASE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut leases = lock(&inner.leases);
        let expired: Vec<DeliveryId> = leases
            .by_delivery
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(d, _)| *d)
            .collect();
        for delivery in expired {
            if let Some(lease) = leases.by_delivery.remove(&delivery) {
                tracing::debug!(topic = %lease.consumer.layout.name, %delivery, "lease expired: redelivered");
                lease.consumer.nack(lease.id);
            }
        }
    }
}
