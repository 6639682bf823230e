//! The file: opening it with the pragmas the store relies on, creating the schema or
//! migrating an older one, and refusing files that are not ours or are newer.
//!
//! The compatibility rule: a build reads every file an earlier build wrote. A schema change
//! updates [`SCHEMA`] (what a new file gets) and appends the statements that bring the
//! previous version to it to [`MIGRATIONS`]; `tests/compat.rs` opens files of every earlier
//! version (`tests/fixtures/`).

use super::{db, Durability, OpenMode, StoreOptions};
use crate::store::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// How to bring each older schema to the next: `MIGRATIONS[i]` turns version `i + 1` into
/// `i + 2`. Never edit an entry that has shipped; append.
const MIGRATIONS: &[&str] = &[
    // 1 -> 2: the instance generation (0 for every instance stored before).
    "ALTER TABLE workflows ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;",
    // 2 -> 3: clients' response topics (none for every instance stored before).
    "ALTER TABLE workflows ADD COLUMN report_to BLOB;",
];

/// Schema version stored in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    visible_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_by_topic ON queue (topic, visible_at, id);
CREATE TABLE IF NOT EXISTS workflows (
    id          TEXT    PRIMARY KEY,
    workflow    TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    input       BLOB    NOT NULL,
    started_at  INTEGER NOT NULL,
    parent      BLOB,
    state       BLOB    NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    generation  INTEGER NOT NULL DEFAULT 0,
    report_to   BLOB    -- clients' response topics, encoded; NULL: none
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    workflow_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL, -- the version the transition started from: one row each
    events      BLOB    NOT NULL, -- the events one transition appended, encoded together
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    reason      TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
";

pub(super) fn open_connection(
    path: &Path,
    mode: OpenMode,
    options: &StoreOptions,
) -> Result<Connection, StoreError> {
    let durability = options.durability;
    let shown = path.display().to_string();
    let corrupt = |e: rusqlite::Error| StoreError::Corrupt {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let connection = match durability {
        Durability::InMemory => Connection::open_in_memory().map_err(db)?,
        Durability::Full | Durability::FullBeforeVisible => {
            if mode == OpenMode::MustExist && !path.exists() {
                return Err(StoreError::Missing { path: shown });
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            Connection::open_with_flags(path, flags).map_err(corrupt)?
        }
    };
    connection.busy_timeout(options.busy_timeout).map_err(db)?;
    // Every statement the writer runs stays prepared.
    connection.set_prepared_statement_cache_capacity(64);
    if durability != Durability::InMemory {
        // WAL: readers do not block the writer.
        let journal: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(corrupt)?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                path: shown,
                reason: format!("cannot enable WAL (journal mode is {journal})"),
            });
        }
        // FULL: SQLite fsyncs the log in every commit. NORMAL: it does not, and the sync
        // thread does before anything is answered (see the module documentation); NORMAL
        // alone would lose acknowledged commits on power loss.
        let synchronous = if durability == Durability::Full {
            "PRAGMA synchronous = NORMAL;"
        } else {
            "PRAGMA synchronous = FULL;"
        };
        connection.execute_batch(synchronous).map_err(corrupt)?;
    }
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(corrupt)?;
    match version {
        0 => {
            let tables: i64 = connection
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(corrupt)?;
            if tables > 0 {
                return Err(StoreError::Corrupt {
                    path: shown,
                    reason: "it is an SQLite database of another application".into(),
                });
            }
            connection
                .execute_batch(&format!(
                    "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(corrupt)?;
        }
        SCHEMA_VERSION => {}
        older @ 1.. if older < SCHEMA_VERSION => migrate(&connection).map_err(corrupt)?,
        found => {
            return Err(StoreError::SchemaVersion {
                path: shown,
                found,
                expected: SCHEMA_VERSION,
            })
        }
    }
    Ok(connection)
}

/// Brings the file to [`SCHEMA_VERSION`] in one transaction. The version is read again inside
/// it: another process may have migrated the file meanwhile.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let migrated = (|| {
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let first = usize::try_from(version - 1).unwrap_or(usize::MAX);
        for step in MIGRATIONS.iter().skip(first) {
            c.execute_batch(step)?;
        }
        c.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
    })();
    match migrated {
        Ok(()) => c.execute_batch("COMMIT"),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
