//! The writer: one connection applying commits in submission order. Every commit waiting at
//! the time goes into one transaction; its statements (one per transition) are sent together
//! without waiting for each answer (pipelining), then `COMMIT`: two round trips per batch.
//!
//! Each transition is one statement that checks before it writes (its version, and that its
//! consumed message was not consumed already) and writes nothing when a check fails, so a
//! conflict does not disturb the rest of the batch. An error of one commit (a value the
//! database refuses) fails that commit only: the batch runs again without it. A lost
//! connection fails the batch with [`StoreError::Unavailable`] before `COMMIT` was sent and
//! with [`StoreError::OutcomeUnknown`] after; the next batch connects again.

use super::connection::{lost, runtime_error, Target};
use super::PostgresOptions;
use crate::store::encoding::Columns;
use crate::store::{CommitOutcome, StoreError, Transition, WorkflowHeader, WorkflowState};
use futures_util::future::{join, join_all};
use infinitic_core::WorkflowId;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

/// How often at most the ids of consumed messages past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How many times a batch runs again after a concurrent consumer recorded one of its messages
/// between its check and its write (the next run sees it as a conflict).
const RACE_RETRIES: u32 = 3;

/// One call to `commit`: its transitions and where its outcomes go.
pub(super) struct Job {
    pub(super) transitions: Vec<Encoded>,
    pub(super) reply: oneshot::Sender<Result<Vec<CommitOutcome>, StoreError>>,
}

/// A transition with its values ready for the statements' parameters.
pub(super) struct Encoded {
    workflow_id: WorkflowId,
    id: String,
    expected_version: i64,
    generation: i64,
    /// When creating, or when a pending instance starts.
    started_at: Option<i64>,
    header: Option<WorkflowHeader>,
    columns: Columns,
    is_final: bool,
    /// Completed or failed: its timers not fired yet never will be.
    ended: bool,
    consumed: Option<String>,
    topics: Vec<String>,
    keys: Vec<String>,
    payloads: Vec<Vec<u8>>,
    deliver_at: Vec<i64>,
    /// For each outbox message, its message id if it is a durable timer.
    timers: Vec<Option<String>>,
}

impl Encoded {
    pub(super) fn new(t: Transition) -> Result<Self, StoreError> {
        if t.expected_version == 0 && t.header.is_none() {
            return Err(StoreError::Database(format!(
                "creating workflow {} needs its header",
                t.workflow_id
            )));
        }
        let columns = Columns::of(&t)?;
        let mut encoded = Self {
            id: t.workflow_id.as_str().to_string(),
            generation: t.header.as_ref().map_or(0, |h| i64::from(h.generation.0)),
            started_at: t.header.as_ref().map(|h| millis(h.started_at.as_millis())),
            expected_version: i64::try_from(t.expected_version).unwrap_or(i64::MAX),
            is_final: t.state.is_final(),
            ended: matches!(
                t.state,
                WorkflowState::Completed(_) | WorkflowState::Failed(_)
            ),
            consumed: t.consumed.map(|c| c.message.as_str().to_string()),
            workflow_id: t.workflow_id,
            header: t.header,
            columns,
            topics: Vec::with_capacity(t.outbox.len()),
            keys: Vec::with_capacity(t.outbox.len()),
            payloads: Vec::with_capacity(t.outbox.len()),
            deliver_at: Vec::with_capacity(t.outbox.len()),
            timers: Vec::with_capacity(t.outbox.len()),
        };
        // Local hand-over fields are for stores that are their own transport: dropped.
        for message in t.outbox {
            encoded.topics.push(message.topic);
            encoded.keys.push(message.key);
            encoded.payloads.push(message.payload);
            encoded
                .deliver_at
                .push(millis(message.deliver_at.as_millis()));
            encoded
                .timers
                .push(message.timer.map(|id| id.as_str().to_string()));
        }
        Ok(encoded)
    }
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The writer's connection with its statements prepared.
struct Connection {
    client: Client,
    create: Statement,
    step: Statement,
    prune: Statement,
}

impl Connection {
    async fn prepare(client: Client, schema: &str) -> Result<Self, StoreError> {
        let prepare = |sql: String| {
            let client = &client;
            async move { client.prepare(&sql).await.map_err(|e| runtime_error(&e)) }
        };
        let create = prepare(create_sql(schema)).await?;
        let step = prepare(step_sql(schema)).await?;
        let prune = prepare(format!(
            "DELETE FROM {schema}.consumed
             WHERE consumed_at < now() - $1::bigint * interval '1 millisecond'"
        ))
        .await?;
        Ok(Self {
            client,
            create,
            step,
            prune,
        })
    }
}

/// What each transition's statement shares: the consumed message not seen before (`seen`),
/// then, only if the instance changed (`changed`, defined by the caller), the consumed
/// message recorded, the history row, the outbox messages in their order, and the timers:
/// the outbox's timer messages recorded (`timers`), the consumed message's timer forgotten
/// (`fired`), and an instance that ended forgets the timers it still had (`ended`). Answers
/// how many instances changed and how many consumed ids were recorded.
///
/// Parameters: $1 id, $2 expected version, $3 state, $4 events, $5 consumed message id,
/// $6..$9 the outbox's topics, keys, payloads and delivery times, $10 the outbox's timer
/// message ids (NULL for other messages), $11 whether the instance ended.
fn transition_sql(schema: &str, changed: &str) -> String {
    format!(
        "WITH seen AS (
            SELECT 1 FROM {schema}.consumed WHERE message_id = $5::text
        ), changed AS (
            {changed}
        ), consumed AS (
            INSERT INTO {schema}.consumed (message_id)
            SELECT $5::text FROM changed WHERE $5::text IS NOT NULL
            ON CONFLICT (message_id) DO NOTHING
            RETURNING 1
        ), history AS (
            INSERT INTO {schema}.history (workflow_id, seq, events)
            SELECT $1::text, $2::bigint, $4::bytea FROM changed WHERE $4::bytea IS NOT NULL
        ), outbox AS (
            INSERT INTO {schema}.outbox (topic, key, payload, deliver_at)
            SELECT m.topic, m.key, m.payload, m.deliver_at
            FROM unnest($6::text[], $7::text[], $8::bytea[], $9::bigint[])
                 WITH ORDINALITY AS m (topic, key, payload, deliver_at, n)
            WHERE EXISTS (SELECT 1 FROM changed)
            ORDER BY m.n
        ), timers AS (
            INSERT INTO {schema}.timers (message_id, workflow_id, due_at, topic, key, payload)
            SELECT m.timer, $1::text, m.deliver_at, m.topic, m.key, m.payload
            FROM unnest($6::text[], $7::text[], $8::bytea[], $9::bigint[], $10::text[])
                 AS m (topic, key, payload, deliver_at, timer)
            WHERE m.timer IS NOT NULL AND NOT $11::boolean AND EXISTS (SELECT 1 FROM changed)
            ON CONFLICT (message_id) DO NOTHING
        ), fired AS (
            DELETE FROM {schema}.timers
            WHERE message_id = $5::text AND EXISTS (SELECT 1 FROM changed)
        ), ended AS (
            DELETE FROM {schema}.timers
            WHERE workflow_id = $1::text AND $11::boolean AND EXISTS (SELECT 1 FROM changed)
        )
        SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM consumed)"
    )
}

/// A transition from version 0: inserts the instance. Extra parameters: $12 generation,
/// $13 workflow, $14 method, $15 input, $16 started at, $17 parent, $18 response topics.
fn create_sql(schema: &str) -> String {
    let changed = format!(
        "INSERT INTO {schema}.workflows (id, generation, workflow, method, input, started_at,
                                         parent, state, version, updated_at, report_to)
         SELECT $1::text, $12::bigint, $13::text, $14::text, $15::bytea, $16::bigint,
                $17::bytea, $3::bytea, 1, now(), $18::bytea
         WHERE $2::bigint = 0 AND NOT EXISTS (SELECT 1 FROM seen)
         ON CONFLICT (id) DO NOTHING
         RETURNING id"
    );
    transition_sql(schema, &changed)
}

/// A transition from a version above 0: compare-and-set update. Extra parameters: $12 the
/// new start time (a pending instance starting), or NULL; $13 the new response topics, or
/// NULL.
fn step_sql(schema: &str) -> String {
    let changed = format!(
        "UPDATE {schema}.workflows
         SET state = $3::bytea, version = version + 1, updated_at = now(),
             started_at = coalesce($12::bigint, started_at),
             report_to = coalesce($13::bytea, report_to)
         WHERE id = $1::text AND version = $2::bigint AND NOT EXISTS (SELECT 1 FROM seen)
         RETURNING id"
    );
    transition_sql(schema, &changed)
}

/// How a batch ended without committing.
enum Failed {
    /// One commit of the batch cannot apply (its index): fail it, run the others again.
    Job(usize, StoreError),
    /// Every commit of the batch fails with this error.
    All(StoreError),
    /// A consumed id was recorded concurrently: run the batch again.
    Race,
}

/// The single writer.
pub(super) struct Writer {
    target: Arc<Target>,
    schema: String,
    connection: Option<Connection>,
    finished: broadcast::Sender<WorkflowId>,
    max_batch: usize,
    retention_ms: i64,
    pruned: Option<Instant>,
}

impl Writer {
    /// The writer, on `client` (already connected, schema prepared).
    pub(super) async fn new(
        target: Arc<Target>,
        schema: &str,
        client: Client,
        options: &PostgresOptions,
        finished: broadcast::Sender<WorkflowId>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            connection: Some(Connection::prepare(client, schema).await?),
            target,
            schema: schema.to_string(),
            finished,
            max_batch: options.max_batch.max(1),
            retention_ms: i64::try_from(options.consumed_retention.as_millis()).unwrap_or(i64::MAX),
            pruned: None,
        })
    }

    /// Applies jobs in the order they come until every store handle is gone.
    pub(super) async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = jobs.recv().await {
            let mut count = first.transitions.len();
            let mut batch = vec![first];
            while count < self.max_batch {
                match jobs.try_recv() {
                    Ok(job) => {
                        count += job.transitions.len();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch).await;
            self.prune().await;
        }
    }

    /// Commits a batch and answers its jobs.
    async fn commit(&mut self, mut batch: Vec<Job>) {
        let mut races = 0;
        loop {
            if batch.is_empty() {
                return;
            }
            let connection = match self.connection().await {
                Ok(connection) => connection,
                Err(error) => return answer_all(batch, &error),
            };
            match execute(connection, &batch).await {
                Ok(outcomes) => {
                    let mut finished = Vec::new();
                    for (job, outcomes) in batch.into_iter().zip(outcomes) {
                        for (t, outcome) in job.transitions.iter().zip(&outcomes) {
                            if t.is_final && *outcome == CommitOutcome::Committed {
                                finished.push(t.workflow_id.clone());
                            }
                        }
                        let _ = job.reply.send(Ok(outcomes));
                    }
                    for id in finished {
                        let _ = self.finished.send(id);
                    }
                    return;
                }
                Err((failed, connection_lost)) => {
                    if connection_lost {
                        self.connection = None;
                    }
                    match failed {
                        Failed::Job(index, error) => {
                            let job = batch.remove(index);
                            let _ = job.reply.send(Err(error));
                        }
                        Failed::All(error) => return answer_all(batch, &error),
                        Failed::Race if races < RACE_RETRIES => races += 1,
                        Failed::Race => {
                            let error = StoreError::Unavailable(
                                "consumed messages were recorded concurrently; try again".into(),
                            );
                            return answer_all(batch, &error);
                        }
                    }
                }
            }
        }
    }

    /// The connection, opened again if it was lost.
    async fn connection(&mut self) -> Result<&Connection, StoreError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            let client = self.target.open().await?;
            self.connection = Some(Connection::prepare(client, &self.schema).await?);
        }
        self.connection.as_ref().ok_or(StoreError::Closed)
    }

    /// Forgets consumed ids past their retention, at most every [`PRUNE_EVERY`].
    async fn prune(&mut self) {
        if self.pruned.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return;
        }
        let Some(connection) = &self.connection else {
            return;
        };
        self.pruned = Some(Instant::now());
        let pruned = connection
            .client
            .execute(&connection.prune, &[&self.retention_ms])
            .await;
        if let Err(e) = pruned {
            tracing::warn!(error = %e, "cannot forget old consumed message ids (tried again later)");
        }
    }
}

fn answer_all(batch: Vec<Job>, error: &StoreError) {
    for job in batch {
        let _ = job.reply.send(Err(error.clone()));
    }
}

/// Runs one batch in one transaction: the outcomes of each job's transitions, or why nothing
/// of it was committed (and whether the connection is lost).
async fn execute(
    connection: &Connection,
    batch: &[Job],
) -> Result<Vec<Vec<CommitOutcome>>, (Failed, bool)> {
    let client = &connection.client;
    let params: Vec<(usize, Vec<&(dyn ToSql + Sync)>)> = batch
        .iter()
        .enumerate()
        .flat_map(|(index, job)| job.transitions.iter().map(move |t| (index, parameters(t))))
        .collect();
    let statements = batch
        .iter()
        .flat_map(|job| job.transitions.iter())
        .zip(&params)
        .map(|(t, (_, params))| {
            let statement = match t.expected_version {
                0 => &connection.create,
                _ => &connection.step,
            };
            client.query_one(statement, params)
        });
    // Polled in this order, so sent in this order: BEGIN first, then every statement.
    let (begun, rows) = join(client.batch_execute("BEGIN"), join_all(statements)).await;
    let failure = match begun {
        Err(e) => Some(Failed::All(runtime_error(&e))),
        Ok(()) => first_failure(&rows, &params),
    };
    let mut outcomes: Vec<Vec<CommitOutcome>> = batch
        .iter()
        .map(|job| Vec::with_capacity(job.transitions.len()))
        .collect();
    let mut failure = failure;
    if failure.is_none() {
        let consumes = batch.iter().flat_map(|job| job.transitions.iter());
        for ((row, (index, _)), t) in rows.iter().zip(&params).zip(consumes) {
            let Ok(row) = row else { continue };
            let (changed, recorded): (i64, i64) = (row.get(0), row.get(1));
            if changed == 1 && t.consumed.is_some() && recorded == 0 {
                failure = Some(Failed::Race);
                break;
            }
            outcomes[*index].push(match changed {
                1 => CommitOutcome::Committed,
                _ => CommitOutcome::Conflict,
            });
        }
    }
    if let Some(failure) = failure {
        let gone = rows.iter().any(|r| r.as_ref().is_err_and(lost));
        let rolled_back = gone || client.batch_execute("ROLLBACK").await.is_ok();
        return Err((failure, gone || !rolled_back));
    }
    match client.batch_execute("COMMIT").await {
        Ok(()) => Ok(outcomes),
        // Sent, and no answer: it may or may not have committed.
        Err(e) if lost(&e) => Err((
            Failed::All(StoreError::OutcomeUnknown(format!(
                "the connection to PostgreSQL was lost during COMMIT: {e}"
            ))),
            true,
        )),
        // The server answered: it rolled back.
        Err(e) => Err((Failed::All(runtime_error(&e)), false)),
    }
}

/// The first error of a batch's statements, as what it fails: the statements after it only
/// report that the transaction was aborted.
fn first_failure(
    rows: &[Result<tokio_postgres::Row, tokio_postgres::Error>],
    params: &[(usize, Vec<&(dyn ToSql + Sync)>)],
) -> Option<Failed> {
    let mut errors = rows
        .iter()
        .zip(params)
        .filter_map(|(row, (job, _))| row.as_ref().err().map(|e| (e, *job)));
    let first = errors.clone().next()?;
    let (error, job) = errors
        .find(|(e, _)| e.code() != Some(&SqlState::IN_FAILED_SQL_TRANSACTION))
        .unwrap_or(first);
    let failure = runtime_error(error);
    Some(match failure.is_transient() {
        true => Failed::All(failure),
        false => Failed::Job(job, failure),
    })
}

/// The statement parameters of `t` (see [`transition_sql`], [`create_sql`], [`step_sql`]).
fn parameters(t: &Encoded) -> Vec<&(dyn ToSql + Sync)> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &t.id,
        &t.expected_version,
        &t.columns.state,
        &t.columns.events,
        &t.consumed,
        &t.topics,
        &t.keys,
        &t.payloads,
        &t.deliver_at,
        &t.timers,
        &t.ended,
    ];
    match (&t.header, t.expected_version) {
        (Some(header), 0) => {
            params.extend([
                &t.generation as &(dyn ToSql + Sync),
                &header.workflow,
                &header.method,
                &header.input,
                &t.started_at,
                &t.columns.parent,
                &t.columns.report_to,
            ]);
        }
        _ => params.extend([&t.started_at as &(dyn ToSql + Sync), &t.columns.report_to]),
    }
    params
}
