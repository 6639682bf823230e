//! The queue's SQL: publish, lease, settle, reserve ids, dead letters.

use super::writer::Effects;
use super::{db, delivery_of, millis, sql_type};
use crate::store::{DeadLetter, Delivery, DeliveryId, Outgoing, Received, Settlement, StoreError};
use infinitic_core::Timestamp;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};
use std::time::Duration;

/// Inserts messages (with their reserved id, if they have one).
pub(super) fn insert_messages(
    c: &Connection,
    effects: &Effects,
    messages: &[Outgoing],
) -> Result<(), StoreError> {
    let mut insert = c
        .prepare_cached(
            "INSERT INTO queue (id, topic, key, payload, visible_at, attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(db)?;
    for m in messages {
        // A message its sender processes itself is stored leased to it (first delivery).
        let (visible_at, attempts) = match m.local_lease {
            Some(lease) => (m.deliver_at.max(effects.now.get()) + lease, 1),
            None => {
                effects.published.set(true);
                (m.deliver_at, 0)
            }
        };
        insert
            .execute(params![
                m.id,
                m.topic,
                m.key,
                m.payload,
                millis(visible_at),
                attempts
            ])
            .map_err(db)?;
    }
    Ok(())
}

/// Moves the queue's id sequence past `count` ids and returns them: AUTOINCREMENT never hands
/// out an id at or below the sequence, in this process or another.
pub(super) fn reserve_ids(c: &Connection, count: u32) -> Result<std::ops::Range<u64>, StoreError> {
    let count = i64::from(count.max(1));
    let current: i64 = c
        .query_row(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'queue'), 0),
                        coalesce((SELECT max(id) FROM queue), 0))",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    let end = current + count;
    let updated = c
        .execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'queue'",
            [end],
        )
        .map_err(db)?;
    if updated == 0 {
        c.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('queue', ?1)",
            [end],
        )
        .map_err(db)?;
    }
    let handle = |row: i64| u64::try_from(row).unwrap_or(0);
    Ok(handle(current + 1)..handle(end + 1))
}

pub(super) fn receive(
    c: &Connection,
    topics: &[String],
    max: usize,
    lease: Duration,
    now: Timestamp,
) -> Result<Received, StoreError> {
    let until = millis(now + lease);
    let mut received = Received::default();
    let mut select = c
        .prepare_cached(
            // No `LIMIT ?`: a bound limit made SQLite prepare the statement again on every
            // call. Rows are read one at a time, so stopping early costs nothing.
            "SELECT id, key, payload, attempts, visible_at FROM queue
             WHERE topic = ?1 ORDER BY visible_at, id",
        )
        .map_err(db)?;
    let mut lease_one = c
        .prepare_cached("UPDATE queue SET visible_at = ?1, attempts = attempts + 1 WHERE id = ?2")
        .map_err(db)?;
    for topic in topics {
        let room = max.saturating_sub(received.deliveries.len());
        let rows = select
            .query_map([topic], |r| Ok((r.get::<_, i64>(0)?, read_queue_row(r))))
            .map_err(db)?
            // With no room, one row still tells when the next message is due.
            .take(room.max(1))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        for (id, row) in rows {
            // A row this build did not write (a foreign tool, a bug) must not stall the topic.
            let (key, payload, attempts, visible_at) = match row {
                Ok(row) => row,
                Err(reason) => {
                    dead_letter_row(
                        c,
                        delivery_of(id),
                        &format!("unreadable queue row {id}: {reason}"),
                        now,
                    )?;
                    continue;
                }
            };
            if visible_at > now || room == 0 {
                received.next_visible_at = Some(
                    received
                        .next_visible_at
                        .map_or(visible_at, |t| t.min(visible_at)),
                );
                break;
            }
            lease_one.execute(params![until, id]).map_err(db)?;
            received.deliveries.push(Delivery {
                id: delivery_of(id),
                topic: topic.clone(),
                key,
                payload,
                attempt: u32::try_from(attempts + 1).unwrap_or(u32::MAX),
            });
        }
    }
    Ok(received)
}

/// A queue row's fields, each checked for its type: key, payload, attempts, visible at.
pub(super) type QueueRow = (String, Vec<u8>, i64, Timestamp);

pub(super) fn read_queue_row(r: &rusqlite::Row<'_>) -> Result<QueueRow, String> {
    let key = match r.get_ref(1).map_err(|e| e.to_string())? {
        ValueRef::Text(text) => {
            String::from_utf8(text.to_vec()).map_err(|_| "its key is not UTF-8 text".to_string())?
        }
        other => {
            return Err(format!(
                "its key is {}, not TEXT",
                sql_type(other.data_type())
            ))
        }
    };
    let payload = match r.get_ref(2).map_err(|e| e.to_string())? {
        ValueRef::Blob(bytes) => bytes.to_vec(),
        other => {
            return Err(format!(
                "its payload is {}, not a BLOB",
                sql_type(other.data_type())
            ))
        }
    };
    let integer = |index: usize, name: &str| match r.get_ref(index) {
        Ok(ValueRef::Integer(n)) => Ok(n),
        Ok(other) => Err(format!(
            "its {name} is {}, not INTEGER",
            sql_type(other.data_type())
        )),
        Err(e) => Err(e.to_string()),
    };
    let attempts = integer(3, "attempt count")?;
    let visible_at = integer(4, "visibility time")?;
    let visible_at = Timestamp::from_millis(u64::try_from(visible_at).unwrap_or(0));
    Ok((key, payload, attempts, visible_at))
}

/// Moves a queue row to the dead letters, whatever its column types.
pub(super) fn dead_letter_row(
    c: &Connection,
    id: DeliveryId,
    reason: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO dead_letters (topic, key, payload, reason, at)
         SELECT CAST(topic AS TEXT), CAST(coalesce(key, '') AS TEXT),
                CAST(coalesce(payload, x'') AS BLOB), ?1, ?2
         FROM queue WHERE id = ?3",
    )
    .map_err(db)?
    .execute(params![reason, millis(now), id])
    .map_err(db)?;
    c.prepare_cached("DELETE FROM queue WHERE id = ?1")
        .map_err(db)?
        .execute([id])
        .map_err(db)?;
    Ok(())
}

pub(super) fn settle(
    c: &Connection,
    effects: &Effects,
    settlements: &[Settlement],
) -> Result<(), StoreError> {
    let mut delete = c
        .prepare_cached("DELETE FROM queue WHERE id = ?1")
        .map_err(db)?;
    for s in settlements {
        match s {
            Settlement::Ack { delivery, publish } => {
                // Already gone (lease expired and another consumer settled it): the publish
                // must not happen twice either.
                if delete.execute([delivery]).map_err(db)? == 1 {
                    insert_messages(c, effects, publish)?;
                }
            }
            Settlement::Retry { delivery, at } => {
                c.prepare_cached("UPDATE queue SET visible_at = ?1 WHERE id = ?2")
                    .map_err(db)?
                    .execute(params![millis(*at), delivery])
                    .map_err(db)?;
            }
            Settlement::DeadLetter {
                delivery,
                reason,
                publish,
            } => {
                let moved = c
                    .prepare_cached(
                        "INSERT INTO dead_letters (topic, key, payload, reason, at)
                         SELECT topic, key, payload, ?1, ?2 FROM queue WHERE id = ?3",
                    )
                    .map_err(db)?
                    .execute(params![reason, millis(effects.now.get()), delivery])
                    .map_err(db)?;
                if moved == 1 {
                    delete.execute([delivery]).map_err(db)?;
                    insert_messages(c, effects, publish)?;
                }
            }
        }
    }
    Ok(())
}

pub(super) fn dead_letters(c: &Connection, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let mut select = c
        .prepare_cached(
            "SELECT topic, key, reason, payload FROM dead_letters ORDER BY id DESC LIMIT ?1",
        )
        .map_err(db)?;
    let rows = select
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(DeadLetter {
                topic: r.get(0)?,
                key: r.get(1)?,
                reason: r.get(2)?,
                payload: r.get(3)?,
            })
        })
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}
