//! Dead letters: a message that can never be processed is published on its topic's `-dlq`
//! companion with the reason in a property, then acknowledged; [`read`] reads them back.

use super::connect::{unavailable, Client};
use super::topics::DEAD_LETTER_SUFFIX;
use crate::store::{DeadLetter, StoreError};
use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::message::proto::command_get_topics_of_namespace::Mode;
use pulsar::reader::Reader;
use pulsar::{ConsumerOptions, TokioExecutor};
use std::time::Duration;

/// Property: why the message was set aside.
pub(crate) const REASON_PROPERTY: &str = "infinitic-reason";
/// Property: the runtime topic it was consumed from.
pub(crate) const TOPIC_PROPERTY: &str = "infinitic-topic";

/// Reads the dead letters of every `-dlq` topic under `namespace` whose name starts with
/// `local_prefix`, newest first, at most `limit`.
pub(crate) async fn read(
    client: &Client,
    namespace: &str,
    local_prefix: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let start = format!("persistent://{namespace}/{local_prefix}");
    let topics = client
        .get_topics_of_namespace(namespace.to_string(), Mode::Persistent)
        .await
        .map_err(|e| unavailable("cannot list the dead-letter topics", e))?;
    let mut found: Vec<(u64, DeadLetter)> = Vec::new();
    for topic in topics
        .into_iter()
        .filter(|t| t.starts_with(&start) && t.ends_with(DEAD_LETTER_SUFFIX))
    {
        found.extend(read_topic(client, &topic).await?);
    }
    // Newest first (publish time, then the order read).
    found.sort_by_key(|(published, _)| std::cmp::Reverse(*published));
    Ok(found.into_iter().take(limit).map(|(_, d)| d).collect())
}

/// Every message of one dead-letter topic, oldest first, with its publish time.
async fn read_topic(client: &Client, topic: &str) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
    let mut reader: Reader<Vec<u8>, TokioExecutor> = client
        .reader()
        .with_topic(topic)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .into_reader()
        .await
        .map_err(|e| unavailable(&format!("cannot read {topic}"), e))?;
    let last = reader
        .get_last_message_id()
        .await
        .map_err(|e| unavailable(&format!("cannot read {topic}"), e))?;
    // An empty topic answers with negative ids.
    if (last.entry_id as i64) < 0 || (last.ledger_id as i64) < 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), reader.next()).await;
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(unavailable(&format!("cannot read {topic}"), e)),
            Ok(None) | Err(_) => break,
        };
        let id = message.message_id().clone();
        let property = |name: &str| {
            message
                .metadata()
                .properties
                .iter()
                .find(|p| p.key == name)
                .map(|p| p.value.clone())
        };
        let dead = DeadLetter {
            topic: property(TOPIC_PROPERTY).unwrap_or_else(|| topic.to_string()),
            key: message.key().unwrap_or_default(),
            reason: property(REASON_PROPERTY).unwrap_or_default(),
            payload: message.payload.data.clone(),
        };
        out.push((message.metadata().publish_time, dead));
        if (id.ledger_id, id.entry_id) >= (last.ledger_id, last.entry_id) {
            break;
        }
    }
    Ok(out)
}
