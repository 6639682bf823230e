//! The PostgreSQL state store against a real server started by the repository's script
//! (`source $(scripts/postgres.sh start --tls)`, or `scripts/test-distributed.sh`), beyond the
//! state-store contract that `tests/store.rs` runs on it with the other stores:
//!
//! - `schema`: created, read back from the checked-in dump of the current version, refused
//!   when it belongs to another application or a newer build; consumed ids forgotten after
//!   their retention.
//! - `connect`: an unreachable server, bad credentials, TLS with the right and a wrong CA, a
//!   connection lost at run time.
//! - `runtime`: workflows run end to end with the state in PostgreSQL.
//! - `timers`: durable timers kept in the `timers` table (written and forgotten with their
//!   transitions, swept when overdue, on a v1 database migrated too), relays claiming outbox
//!   entries, the database's clock.
//!
//! Without a server each test is skipped with a message; under `CI=true` it fails.

#[allow(dead_code)]
#[path = "../support/postgres.rs"]
mod pg;

mod connect;
mod runtime;
mod schema;
mod timers;
