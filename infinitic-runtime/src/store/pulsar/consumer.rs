//! Receiving: one consumer per Pulsar topic, owned by a task that buffers what the broker
//! pushes (up to a bound, beyond which it stops asking, so the broker's flow control holds the
//! rest), sends acknowledgements and negative acknowledgements, and subscribes again when its
//! stream ends or the subscription fails.

use super::connect::Client;
use super::topics::{Routing, TopicLayout};
use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::message::proto::MessageIdData;
use pulsar::{Consumer, ConsumerOptions, SubType, TokioExecutor};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// The message property counting deliveries before this copy (a retry is a new copy).
pub(crate) const ATTEMPTS_PROPERTY: &str = "infinitic-attempts";

/// A message received and not yet taken by `receive`.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) id: MessageIdData,
    pub(crate) key: String,
    pub(crate) payload: Vec<u8>,
    /// Deliveries of earlier copies of this message ([`ATTEMPTS_PROPERTY`]).
    pub(crate) earlier_attempts: u32,
}

/// What the consumer task is asked to do.
#[derive(Debug)]
enum Command {
    Ack(MessageIdData),
    Nack(MessageIdData),
    Close(oneshot::Sender<()>),
}

/// What the task and the transport share.
#[derive(Debug, Default)]
struct Shared {
    buffer: Mutex<VecDeque<Incoming>>,
    /// Signalled when `receive` took messages out of a full buffer.
    space: Notify,
    /// Why the consumer is not subscribed right now, if it is not.
    down: Mutex<Option<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The transport's handle on one topic's consumer task; dropping it ends the task.
#[derive(Debug)]
pub(crate) struct TopicConsumer {
    pub(crate) layout: TopicLayout,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    capacity: usize,
}

/// How the task subscribes.
pub(crate) struct Subscribe {
    pub(crate) client: Client,
    pub(crate) subscription: String,
    pub(crate) consumer_name: String,
    pub(crate) capacity: usize,
    /// Incremented whenever a message is buffered (wakes `Transport::activity`).
    pub(crate) activity: Arc<watch::Sender<u64>>,
}

impl TopicConsumer {
    /// Starts the consumer task of `layout`.
    pub(crate) fn spawn(layout: TopicLayout, subscribe: Subscribe) -> Self {
        let shared = Arc::new(Shared::default());
        let (commands, rx) = mpsc::unbounded_channel();
        let capacity = subscribe.capacity.max(1);
        *lock(&shared.down) = Some("subscribing".into());
        tokio::spawn(run(layout.clone(), subscribe, Arc::clone(&shared), rx));
        Self {
            layout,
            shared,
            commands,
            capacity,
        }
    }

    /// Takes up to `max` buffered messages, oldest first.
    pub(crate) fn take(&self, max: usize) -> Vec<Incoming> {
        let mut buffer = lock(&self.shared.buffer);
        let was_full = buffer.len() >= self.capacity;
        let n = max.min(buffer.len());
        let taken: Vec<Incoming> = buffer.drain(..n).collect();
        drop(buffer);
        if was_full && n > 0 {
            self.shared.space.notify_one();
        }
        taken
    }

    /// Why the consumer is not subscribed, if it is not.
    pub(crate) fn down(&self) -> Option<String> {
        lock(&self.shared.down).clone()
    }

    /// Acknowledges a message (removes it from the subscription).
    pub(crate) fn ack(&self, id: MessageIdData) {
        let _ = self.commands.send(Command::Ack(id));
    }

    /// Asks the broker to deliver a message again now.
    pub(crate) fn nack(&self, id: MessageIdData) {
        let _ = self.commands.send(Command::Nack(id));
    }

    /// Sends the acknowledgements queued so far, then closes the consumer.
    pub(crate) async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Close(reply)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
    }
}

/// What woke the task.
enum Event {
    Command(Option<Command>),
    Message(Box<Option<Result<pulsar::consumer::Message<Vec<u8>>, pulsar::Error>>>),
    Space,
}

async fn subscribe(
    layout: &TopicLayout,
    s: &Subscribe,
) -> Result<Consumer<Vec<u8>, TokioExecutor>, pulsar::Error> {
    let sub_type = match layout.routing {
        Routing::KeyShared => SubType::KeyShared,
        Routing::Shared => SubType::Shared,
    };
    s.client
        .consumer()
        .with_topic(&layout.pulsar)
        .with_subscription(&s.subscription)
        .with_subscription_type(sub_type)
        .with_consumer_name(&s.consumer_name)
        .with_options(
            ConsumerOptions::default()
                // A new subscription starts at the oldest message: what was published before
                // the first worker subscribed is not lost.
                .with_initial_position(InitialPosition::Earliest)
                .with_receiver_queue_size(s.capacity.clamp(1, 1000) as u32),
        )
        .build()
        .await
}

/// The consumer task: subscribes, buffers, acks; subscribes again when the stream ends.
async fn run(
    layout: TopicLayout,
    s: Subscribe,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut failures = 0u32;
    loop {
        let mut consumer = match subscribe(&layout, &s).await {
            Ok(consumer) => {
                failures = 0;
                *lock(&shared.down) = None;
                consumer
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let reason = format!("cannot subscribe to {}: {error}", layout.pulsar);
                crate::worker::warn_throttled(&format!("pulsar subscribe {}", layout.name), || {
                    reason.clone()
                });
                *lock(&shared.down) = Some(reason);
                let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                // Settlements of messages from an earlier consumer cannot be sent meanwhile:
                // their messages come back by redelivery.
                tokio::select! {
                    command = commands.recv() => match command {
                        None => return,
                        Some(Command::Close(reply)) => { let _ = reply.send(()); return; }
                        Some(_) => {}
                    },
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        loop {
            let room = lock(&shared.buffer).len() < s.capacity;
            let event = tokio::select! {
                biased;
                command = commands.recv() => Event::Command(command),
                message = consumer.next(), if room => Event::Message(Box::new(message)),
                _ = shared.space.notified(), if !room => Event::Space,
            };
            match event {
                Event::Command(None) => return,
                Event::Command(Some(Command::Ack(id))) => {
                    let _ = consumer.ack_with_id(&layout.pulsar, id).await;
                }
                Event::Command(Some(Command::Nack(id))) => {
                    let _ = consumer.nack_with_id(&layout.pulsar, id).await;
                }
                Event::Command(Some(Command::Close(reply))) => {
                    // Dropping the consumer lets its engine send the acknowledgements queued
                    // before it, in order, then close the consumer on the broker.
                    drop(consumer);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = reply.send(());
                    return;
                }
                Event::Message(message) => match *message {
                    Some(Ok(message)) => {
                        let earlier_attempts = message
                            .metadata()
                            .properties
                            .iter()
                            .find(|p| p.key == ATTEMPTS_PROPERTY)
                            .and_then(|p| p.value.parse().ok())
                            .unwrap_or(0);
                        let incoming = Incoming {
                            id: message.message_id().clone(),
                            key: message.key().unwrap_or_default(),
                            payload: message.payload.data,
                            earlier_attempts,
                        };
                        lock(&shared.buffer).push_back(incoming);
                        s.activity.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Some(Err(error)) => {
                        crate::worker::warn_throttled(
                            &format!("pulsar receive {}", layout.name),
                            || format!("error from the consumer of {}: {error}", layout.pulsar),
                        );
                    }
                    None => {
                        tracing::warn!(topic = %layout.pulsar, "the consumer's stream ended: subscribing again");
                        *lock(&shared.down) = Some("the consumer's stream ended".into());
                        break;
                    }
                },
                Event::Space => {}
            }
        }
    }
}
