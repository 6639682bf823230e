//! The PostgreSQL server of the tests, started by `scripts/postgres.sh start --tls` (which
//! writes `INFINITIC_PG_URL` and the CA paths to an env file) or by
//! `scripts/test-distributed.sh`. Without one a test is skipped with a message, except under
//! `CI=true`, where it fails: CI never skips.

use infinitic::store::postgres::{PostgresOptions, PostgresStore};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server from the environment.
pub struct Server {
    /// `postgres://user:password@127.0.0.1:port/database`.
    pub url: String,
    /// The CA that signed the server's certificate, when it has TLS on.
    pub ca: Option<PathBuf>,
    /// A CA that did not.
    pub wrong_ca: Option<PathBuf>,
}

/// The server, or `None` (with a message) when there is none and CI is not set.
pub fn server() -> Option<Server> {
    let path = |name: &str| std::env::var_os(name).map(PathBuf::from);
    match std::env::var("INFINITIC_PG_URL") {
        Ok(url) if !url.is_empty() => Some(Server {
            url,
            ca: path("INFINITIC_PG_CA"),
            wrong_ca: path("INFINITIC_PG_WRONG_CA"),
        }),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "PostgreSQL required under CI=true: run scripts/test-distributed.sh, or \
             `source $(scripts/postgres.sh start --tls)` before the tests"
        ),
        _ => {
            eprintln!(
                "skipped: no PostgreSQL (INFINITIC_PG_URL is not set; \
                 `source $(scripts/postgres.sh start --tls)` first)"
            );
            None
        }
    }
}

/// A schema (namespace) name no other test uses: `t_NAME_PID_N`.
pub fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name: String = name.chars().take(40).collect();
    format!("t_{name}_{}_{n}", std::process::id()).to_lowercase()
}

impl Server {
    /// Runs `sql` with psql on `url`; its output (unaligned, tuples only), or its error.
    pub fn try_psql(url: &str, sql: &str) -> Result<String, String> {
        let output = Command::new("psql")
            .args([
                url,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs (installed with the server)");
        match output.status.success() {
            true => Ok(String::from_utf8_lossy(&output.stdout).trim().to_string()),
            false => Err(String::from_utf8_lossy(&output.stderr).to_string()),
        }
    }

    /// Runs `sql` on the test database; panics on an error.
    pub fn psql(&self, sql: &str) -> String {
        Self::try_psql(&self.url, sql).unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// The URL of a new, empty database named after `name`.
    pub fn fresh_database(&self, name: &str) -> String {
        let database = unique(name);
        self.psql(&format!("CREATE DATABASE {database}"));
        let (base, _) = self.url.rsplit_once('/').expect("a URL with a database");
        format!("{base}/{database}")
    }

    /// A store on the test database, in `schema`.
    pub async fn store(&self, schema: &str) -> PostgresStore {
        PostgresStore::connect(&self.url, options(schema))
            .await
            .unwrap_or_else(|e| panic!("connect to the test PostgreSQL: {e}"))
    }
}

/// The URL of `infinitic_reader`, a role `scripts/postgres.sh` creates with no rights,
/// after granting it reads (only) of `schema` on the database of `url`.
pub fn read_only_role(url: &str, schema: &str) -> String {
    let reader = std::env::var("INFINITIC_PG_READER_URL")
        .expect("INFINITIC_PG_READER_URL (written by scripts/postgres.sh start)");
    let sql = format!(
        "GRANT USAGE ON SCHEMA {schema} TO infinitic_reader;
         GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO infinitic_reader;"
    );
    Server::try_psql(url, &sql).unwrap_or_else(|e| panic!("grant reads to the reader: {e}"));
    reader
}

/// The default options, in `schema`.
pub fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: schema.to_string(),
        ..PostgresOptions::default()
    }
}
