//! Loads and the outbox relay, on a few connections of their own beside the writer's.
//!
//! The relay's reads claim what they return for the store handle that reads: an outbox entry
//! read through one handle (one process's relay) is skipped by the others until its claim
//! expires ([`PostgresOptions::outbox_claim`]), so with several workers on one database each
//! entry is normally published once; the claims of a relay that died expire and another
//! relay publishes its entries. The handle that claimed an entry reads it again until it
//! clears it (a publish that failed is tried again at once). Overdue timers are claimed the same
//! way, for a grace period ([`PostgresOptions::timer_grace`]). Both use the database's clock.
//!
//! No pool crate: a connection serves concurrent queries (the driver pipelines them), so a
//! handful shared round robin does what a pool would; a lost one is opened again on its next
//! use.

use super::connection::{runtime_error, Target};
use super::PostgresOptions;
use crate::store::encoding::{decode_events, decode_report_to};
use crate::store::{
    OutboxEntry, Outgoing, StoreError, StoredWorkflow, WorkflowHeader, WorkflowState,
};
use infinitic_core::message::MessageId;
use infinitic_core::{decode, Generation, Timestamp, WorkflowId};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_postgres::{Client, Row, Statement};

/// The readers' connections.
#[derive(Debug)]
pub(super) struct Readers {
    target: Arc<Target>,
    schema: String,
    claim_ms: i64,
    grace_ms: i64,
    /// Who this handle is, for its claims: unique per store handle.
    claimant: String,
    slots: Vec<Mutex<Option<Arc<Reader>>>>,
    next: AtomicUsize,
}

/// One reader connection with its statements prepared.
#[derive(Debug)]
struct Reader {
    client: Client,
    load: Statement,
    load_with_history: Statement,
    outbox: Statement,
    clear: Statement,
    overdue: Statement,
}

/// A timer published again by sweeps waits twice as long before each next one, up to
/// 2^this grace periods.
const SWEEP_BACKOFF: i32 = 6;

/// The database's time in milliseconds since the epoch, in SQL (at the statement's start).
pub(super) const NOW_MS: &str = "(extract(epoch FROM statement_timestamp()) * 1000)::bigint";

const COLUMNS: &str =
    "generation, workflow, method, input, started_at, parent, state, version, report_to";

impl Reader {
    async fn open(target: &Target, schema: &str) -> Result<Self, StoreError> {
        let client = target.open().await?;
        let db = |e: tokio_postgres::Error| runtime_error(&e);
        // One statement (one snapshot) reads the instance and its history together.
        let load_with_history = format!(
            "SELECT {COLUMNS}, ARRAY(SELECT events FROM {schema}.history
                                     WHERE workflow_id = $1 ORDER BY seq)
             FROM {schema}.workflows WHERE id = $1"
        );
        Ok(Self {
            load: client
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM {schema}.workflows WHERE id = $1"
                ))
                .await
                .map_err(db)?,
            load_with_history: client.prepare(&load_with_history).await.map_err(db)?,
            // $1 how many, $2 for how long (ms), $3 who claims. Entries claimed by another
            // handle, or locked by one claiming them now, are skipped.
            outbox: client
                .prepare(&format!(
                    "UPDATE {schema}.outbox o
                     SET claimed_by = $3::text, claimed_until = {NOW_MS} + $2::bigint
                     FROM (SELECT id FROM {schema}.outbox
                           WHERE claimed_until IS NULL OR claimed_until < {NOW_MS}
                              OR claimed_by = $3::text
                           ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) claimed
                     WHERE o.id = claimed.id
                     RETURNING o.id, o.topic, o.key, o.payload, o.deliver_at"
                ))
                .await
                .map_err(db)?,
            // $1 how many, $2 the grace period (ms): timers due longer ago than that, not
            // published again within it, then within twice it, ... (a timer its instance
            // ignores, the loser of a race, stays until the instance ends: published again
            // less and less often, at most every 2^SWEEP_BACKOFF grace periods).
            overdue: client
                .prepare(&format!(
                    "UPDATE {schema}.timers t SET swept_at = {NOW_MS}, sweeps = t.sweeps + 1
                     FROM (SELECT message_id FROM {schema}.timers
                           WHERE due_at < {NOW_MS} - $2::bigint
                             AND (swept_at IS NULL OR swept_at < {NOW_MS}
                                  - $2::bigint * (1::bigint << least(sweeps - 1, {SWEEP_BACKOFF})))
                           ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) overdue
                     WHERE t.message_id = overdue.message_id
                     RETURNING t.topic, t.key, t.payload, t.due_at, t.message_id"
                ))
                .await
                .map_err(db)?,
            clear: client
                .prepare(&format!(
                    "DELETE FROM {schema}.outbox WHERE id = ANY($1::bigint[])"
                ))
                .await
                .map_err(db)?,
            client,
        })
    }
}

impl Readers {
    pub(super) fn new(target: Arc<Target>, schema: &str, options: &PostgresOptions) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            target,
            schema: schema.to_string(),
            claim_ms: ms(options.outbox_claim),
            grace_ms: ms(options.timer_grace),
            claimant: claimant(),
            slots: (0..options.readers.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next connection round robin, opened if it is not (or no longer) open.
    async fn reader(&self) -> Result<Arc<Reader>, StoreError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let open = slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .filter(|reader| !reader.client.is_closed());
        if let Some(reader) = open {
            return Ok(reader);
        }
        let reader = Arc::new(Reader::open(&self.target, &self.schema).await?);
        *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::clone(&reader));
        Ok(reader)
    }

    pub(super) async fn load(
        &self,
        id: &WorkflowId,
        with_history: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        let reader = self.reader().await?;
        let statement = match with_history {
            true => &reader.load_with_history,
            false => &reader.load,
        };
        let row = reader
            .client
            .query_opt(statement, &[&id.as_str()])
            .await
            .map_err(|e| runtime_error(&e))?;
        row.map(|row| instance(id, &row, with_history)).transpose()
    }

    pub(super) async fn outbox(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let reader = self.reader().await?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = reader
            .client
            .query(&reader.outbox, &[&limit, &self.claim_ms, &self.claimant])
            .await
            .map_err(|e| runtime_error(&e))?;
        let mut entries = rows
            .iter()
            .map(outbox_entry)
            .collect::<Result<Vec<_>, _>>()?;
        // An update returns its rows in no particular order.
        entries.sort_by_key(|e| e.id);
        Ok(entries)
    }

    /// `count` readings of the database's time against this machine's wall clock, on one
    /// connection: for each, the round trip and how far ahead the database is, both in
    /// milliseconds, measured against the middle of the round trip. The reader is taken
    /// first, so opening a connection is not measured.
    pub(super) async fn clock_samples(&self, count: usize) -> Result<Vec<(i64, i64)>, StoreError> {
        let reader = self.reader().await?;
        let wall_ms = || i64::try_from(Timestamp::wall_clock().as_millis()).unwrap_or(i64::MAX);
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let before = wall_ms();
            // The simple protocol: one round trip.
            let messages = reader
                .client
                .simple_query(&format!("SELECT {NOW_MS}"))
                .await
                .map_err(|e| runtime_error(&e))?;
            let after = wall_ms();
            let value = messages.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
                _ => None,
            });
            let database: i64 = value
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| StoreError::Database(format!("the database's time: {value:?}")))?;
            samples.push((after - before, database - (before + (after - before) / 2)));
        }
        Ok(samples)
    }

    /// Claims up to `max` overdue timers (see [`crate::store::StateStore::overdue_timers`]).
    pub(super) async fn overdue_timers(&self, max: usize) -> Result<Vec<Outgoing>, StoreError> {
        let reader = self.reader().await?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = reader
            .client
            .query(&reader.overdue, &[&limit, &self.grace_ms])
            .await
            .map_err(|e| runtime_error(&e))?;
        let mut timers = rows.iter().map(timer).collect::<Result<Vec<_>, _>>()?;
        timers.sort_by_key(|t| t.deliver_at);
        Ok(timers)
    }

    pub(super) async fn clear_outbox(&self, ids: Vec<u64>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = ids
            .into_iter()
            .filter_map(|id| id.try_into().ok())
            .collect();
        let reader = self.reader().await?;
        reader
            .client
            .execute(&reader.clear, &[&ids])
            .await
            .map_err(|e| runtime_error(&e))?;
        Ok(())
    }
}

/// An instance from its row, reporting what of a damaged row could be read.
fn instance(id: &WorkflowId, row: &Row, with_history: bool) -> Result<StoredWorkflow, StoreError> {
    let version: Option<u64> = row
        .try_get::<_, i64>(7)
        .ok()
        .and_then(|v| u64::try_from(v).ok());
    let state_bytes: Vec<u8> = row.try_get(6).unwrap_or_default();
    let state: Result<WorkflowState, _> = decode(&state_bytes);
    let undecodable = |what: &str, reason: String| StoreError::Undecodable {
        id: id.clone(),
        version,
        state: state.as_ref().ok().cloned(),
        what: what.into(),
        reason,
    };
    let column = |what: &str, e: tokio_postgres::Error| undecodable(what, e.to_string());
    let generation: i64 = row.try_get(0).map_err(|e| column("generation", e))?;
    let workflow: String = row.try_get(1).map_err(|e| column("workflow name", e))?;
    let method: String = row.try_get(2).map_err(|e| column("method name", e))?;
    let input: Vec<u8> = row.try_get(3).map_err(|e| column("input", e))?;
    let started_at: i64 = row.try_get(4).map_err(|e| column("start time", e))?;
    let parent: Option<Vec<u8>> = row.try_get(5).map_err(|e| column("parent", e))?;
    let parent = parent
        .map(|bytes| decode(&bytes))
        .transpose()
        .map_err(|e| undecodable("parent", e.to_string()))?;
    let state = match &state {
        Ok(state) => state.clone(),
        Err(e) => return Err(undecodable("state", e.to_string())),
    };
    let Some(version) = version else {
        return Err(undecodable("version", "not a positive integer".into()));
    };
    let report_to: Option<Vec<u8>> = row.try_get(8).map_err(|e| column("response topics", e))?;
    let report_to = decode_report_to(report_to.as_deref())
        .map_err(|e| undecodable("response topics", e.to_string()))?;
    let mut history = Vec::new();
    if with_history {
        let rows: Vec<Vec<u8>> = row.try_get(9).map_err(|e| column("history", e))?;
        for (index, bytes) in rows.iter().enumerate() {
            let events = decode_events(bytes)
                .map_err(|e| undecodable(&format!("history row {index}"), e.to_string()))?;
            history.extend(events);
        }
    }
    Ok(StoredWorkflow {
        id: id.clone(),
        header: WorkflowHeader {
            generation: Generation(u32::try_from(generation).unwrap_or(u32::MAX)),
            workflow,
            method,
            input,
            started_at: Timestamp::from_millis(u64::try_from(started_at).unwrap_or(0)),
            parent,
        },
        state,
        version,
        history,
        report_to,
    })
}

fn outbox_entry(row: &Row) -> Result<OutboxEntry, StoreError> {
    let db = |e: tokio_postgres::Error| StoreError::Database(format!("outbox row: {e}"));
    let id: i64 = row.try_get(0).map_err(db)?;
    let deliver_at: i64 = row.try_get(4).map_err(db)?;
    Ok(OutboxEntry {
        id: u64::try_from(id).unwrap_or(0),
        message: Outgoing::new(
            row.try_get::<_, String>(1).map_err(db)?,
            row.try_get::<_, String>(2).map_err(db)?,
            row.try_get(3).map_err(db)?,
            Timestamp::from_millis(u64::try_from(deliver_at).unwrap_or(0)),
        ),
    })
}

fn timer(row: &Row) -> Result<Outgoing, StoreError> {
    let db = |e: tokio_postgres::Error| StoreError::Database(format!("timer row: {e}"));
    let due_at: i64 = row.try_get(3).map_err(db)?;
    let id: String = row.try_get(4).map_err(db)?;
    Ok(Outgoing::new(
        row.try_get::<_, String>(0).map_err(db)?,
        row.try_get::<_, String>(1).map_err(db)?,
        row.try_get(2).map_err(db)?,
        Timestamp::from_millis(u64::try_from(due_at).unwrap_or(0)),
    )
    .as_timer(MessageId::new(id)))
}

/// A name no other store handle has: the host's process id, the time and a counter.
fn claimant() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos:x}-{n}", std::process::id())
}
