//! The store's tables: created in their own PostgreSQL schema, migrated from an older version,
//! and refused when they belong to another application or to a newer build.
//!
//! The compatibility rule: a build reads every database an earlier build wrote. A schema
//! change updates [`tables`] (what a new database gets) and appends the statements that bring
//! the previous version to it to [`MIGRATIONS`]; `tests/postgres/schema.rs` loads a dump of
//! every earlier version (`tests/fixtures/postgres/`).

use super::connection::runtime_error;
use crate::store::StoreError;
use tokio_postgres::Client;

/// How to bring each older schema to the next: `MIGRATIONS[i]` turns version `i + 1` into
/// `i + 2`; `{schema}` stands for the quoted schema name. Never edit an entry that has
/// shipped; append.
const MIGRATIONS: &[&str] = &[
    // 1 -> 2: clients' response topics (none for every instance stored before).
    "ALTER TABLE {schema}.workflows ADD COLUMN report_to bytea;",
    // 2 -> 3: durable timers kept in the store; relays claim outbox entries. A timer already in
    // the outbox or with the broker when the database is migrated has no row: its broker
    // message stays its only record, as before.
    "CREATE TABLE {schema}.timers (
         message_id  text        PRIMARY KEY,
         workflow_id text        NOT NULL,
         due_at      bigint      NOT NULL,
         topic       text        NOT NULL,
         key         text        NOT NULL,
         payload     bytea       NOT NULL,
         swept_at    bigint,
         sweeps      integer     NOT NULL DEFAULT 0
     );
     CREATE INDEX timers_by_due ON {schema}.timers (due_at);
     CREATE INDEX timers_by_workflow ON {schema}.timers (workflow_id);
     ALTER TABLE {schema}.outbox ADD COLUMN claimed_by text, ADD COLUMN claimed_until bigint;",
];

/// The schema version this build writes, stored in the `schema_version` table.
pub const SCHEMA_VERSION: i32 = 1 + MIGRATIONS.len() as i32;

/// The tables of a new database, at [`SCHEMA_VERSION`]. `{schema}`: the quoted schema name.
const TABLES: &str = "
CREATE TABLE {schema}.schema_version (
    version     integer     NOT NULL
);
CREATE TABLE {schema}.workflows (
    id          text        PRIMARY KEY,
    generation  bigint      NOT NULL,
    workflow    text        NOT NULL,
    method      text        NOT NULL,
    input       bytea       NOT NULL,
    started_at  bigint      NOT NULL,   -- milliseconds since the epoch
    parent      bytea,
    state       bytea       NOT NULL,
    version     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL,
    report_to   bytea                   -- clients' response topics, encoded; NULL: none
);
CREATE TABLE {schema}.history (
    workflow_id text        NOT NULL,
    seq         bigint      NOT NULL,   -- the version the transition started from: one row each
    events      bytea       NOT NULL,   -- the events one transition appended, encoded together
    PRIMARY KEY (workflow_id, seq)
);
CREATE TABLE {schema}.outbox (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    key         text        NOT NULL,
    payload     bytea       NOT NULL,
    deliver_at  bigint      NOT NULL,   -- milliseconds since the epoch
    claimed_by  text,                   -- the store handle whose relay publishes it
    claimed_until bigint                -- until then (ms, database clock)
);
CREATE TABLE {schema}.timers (          -- durable timers not consumed yet: their truth
    message_id  text        PRIMARY KEY,
    workflow_id text        NOT NULL,
    due_at      bigint      NOT NULL,   -- milliseconds since the epoch
    topic       text        NOT NULL,
    key         text        NOT NULL,
    payload     bytea       NOT NULL,
    swept_at    bigint,                 -- last published again by a sweep (ms)
    sweeps      integer     NOT NULL DEFAULT 0  -- how many times
);
CREATE INDEX timers_by_due ON {schema}.timers (due_at);
CREATE INDEX timers_by_workflow ON {schema}.timers (workflow_id);
CREATE TABLE {schema}.consumed (
    message_id  text        PRIMARY KEY,
    consumed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consumed_by_time ON {schema}.consumed (consumed_at);
";

/// The tables of a new database, in `schema` (quoted).
fn tables(schema: &str) -> String {
    TABLES.replace("{schema}", schema)
}

/// `name` quoted as an SQL identifier, if it is a plain lowercase name (anything else would
/// be folded or need escaping, and is more likely a mistake).
pub(super) fn namespace(name: &str) -> Result<String, StoreError> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    match plain {
        true => Ok(format!("\"{name}\"")),
        false => Err(StoreError::Database(format!(
            "invalid schema name {name:?}: use lowercase letters, digits and _ (63 at most)"
        ))),
    }
}

/// Creates the tables in `schema` (quoted) or migrates them to [`SCHEMA_VERSION`], in one
/// transaction under an advisory lock, so processes starting together do it once.
pub(super) async fn prepare(
    client: &Client,
    schema: &str,
    location: &str,
) -> Result<(), StoreError> {
    let db = |e: tokio_postgres::Error| runtime_error(&e);
    client
        .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(db)?;
    let prepared = prepare_in_transaction(client, schema, location).await;
    let end = match prepared {
        Ok(()) => "COMMIT",
        Err(_) => "ROLLBACK",
    };
    let ended = client.batch_execute(end).await.map_err(db);
    prepared.and(ended)
}

async fn prepare_in_transaction(
    client: &Client,
    schema: &str,
    location: &str,
) -> Result<(), StoreError> {
    let db = |e: tokio_postgres::Error| runtime_error(&e);
    let name = schema.trim_matches('"');
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('infinitic schema ' || $1::text))",
            &[&name],
        )
        .await
        .map_err(db)?;
    let found: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
            &[&name],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let corrupt = |reason: String| StoreError::Corrupt {
        path: location.to_string(),
        reason,
    };
    if found.is_empty() {
        let create = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; {} INSERT INTO {schema}.schema_version VALUES ({SCHEMA_VERSION});",
            tables(schema)
        );
        return client.batch_execute(&create).await.map_err(db);
    }
    if !found.iter().any(|t| t == "schema_version") {
        return Err(corrupt(format!(
            "schema {name} holds tables of another application ({}): choose another schema",
            found.join(", ")
        )));
    }
    let versions = client
        .query(
            &format!("SELECT version::bigint FROM {schema}.schema_version"),
            &[],
        )
        .await
        .map_err(|e| corrupt(format!("its schema_version table is not ours: {e}")))?;
    let version: i64 = match versions.as_slice() {
        [row] => row
            .try_get(0)
            .map_err(|e| corrupt(format!("unreadable schema version: {e}")))?,
        rows => {
            return Err(corrupt(format!(
                "its schema_version table has {} rows, not one",
                rows.len()
            )))
        }
    };
    let current = i64::from(SCHEMA_VERSION);
    match version {
        v if v == current => Ok(()),
        v if v > current => Err(StoreError::SchemaVersion {
            path: location.to_string(),
            found: v,
            expected: current,
        }),
        v if v >= 1 => {
            let first = usize::try_from(v - 1).unwrap_or(usize::MAX);
            for step in MIGRATIONS.iter().skip(first) {
                let step = step.replace("{schema}", schema);
                client.batch_execute(&step).await.map_err(db)?;
            }
            let set = format!("UPDATE {schema}.schema_version SET version = {SCHEMA_VERSION}");
            client.batch_execute(&set).await.map_err(db)
        }
        v => Err(corrupt(format!("unknown schema version {v}"))),
    }
}
