//! Opening connections (plain or TLS) and turning the driver's errors into [`StoreError`]s that
//! say what to do: try again later (unreachable, restarting), fix the credentials or the CA.

use super::{PostgresOptions, PostgresTls};
use crate::store::StoreError;
use postgres_native_tls::MakeTlsConnector;
use std::str::FromStr;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// Where and how to connect.
pub(super) struct Target {
    config: Config,
    tls: Option<MakeTlsConnector>,
    schema: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.write_str(&self.location())
    }
}

impl Target {
    pub(super) fn new(url: &str, options: &PostgresOptions) -> Result<Self, StoreError> {
        let mut config = Config::from_str(url).map_err(|e| {
            // The driver's message never repeats the URL (which holds the password).
            StoreError::Database(format!("invalid PostgreSQL connection URL: {e}"))
        })?;
        config.connect_timeout(options.connect_timeout);
        config.application_name("infinitic");
        let tls = match &options.tls {
            PostgresTls::Disabled => {
                config.ssl_mode(SslMode::Disable);
                None
            }
            PostgresTls::Required { ca_file } => {
                config.ssl_mode(SslMode::Require);
                Some(tls_connector(ca_file.as_deref())?)
            }
        };
        Ok(Self {
            config,
            tls,
            schema: options.schema.clone(),
        })
    }

    /// `host:port` (the first of each), for messages.
    fn address(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// `postgres://user@host:port/database (schema NAME)`: where the store is, no password.
    pub(super) fn location(&self) -> String {
        let user = self.config.get_user().unwrap_or("");
        let database = self.config.get_dbname().unwrap_or(user);
        format!(
            "postgres://{user}@{}/{database} (schema {})",
            self.address(),
            self.schema
        )
    }

    /// A new connection, its driver running on the current tokio runtime.
    pub(super) async fn open(&self) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            None => self
                .config
                .connect(NoTls)
                .await
                .map(|(client, connection)| {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    client
                }),
            Some(tls) => self
                .config
                .connect(tls.clone())
                .await
                .map(|(client, connection)| {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    client
                }),
        };
        connected.map_err(|e| self.connect_error(&e))
    }

    /// Why connecting failed, in terms of what to do about it.
    fn connect_error(&self, e: &tokio_postgres::Error) -> StoreError {
        let address = self.address();
        let user = self.config.get_user().unwrap_or("");
        if let Some(tls) = find_source::<native_tls::Error>(e) {
            return StoreError::Database(format!(
                "TLS with PostgreSQL at {address} failed (is the CA certificate the one that \
                 signed the server's?): {tls}"
            ));
        }
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if code == &SqlState::INVALID_PASSWORD
                || code == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return StoreError::Database(format!(
                    "PostgreSQL at {address} refused the credentials of user {user} \
                     (authentication failed: check the user and password): {}",
                    db.message()
                ));
            }
            if is_transient_code(code) {
                return StoreError::Unavailable(format!(
                    "PostgreSQL at {address} cannot take connections now: {}",
                    db.message()
                ));
            }
            return StoreError::Database(format!("PostgreSQL at {address}: {}", db.message()));
        }
        if find_source::<std::io::Error>(e).is_some() || e.is_closed() {
            return StoreError::Unavailable(format!("cannot reach PostgreSQL at {address}: {e}"));
        }
        let text = e.to_string();
        if text.contains("TLS") {
            return StoreError::Database(format!("TLS with PostgreSQL at {address}: {text}"));
        }
        StoreError::Unavailable(format!("cannot connect to PostgreSQL at {address}: {text}"))
    }
}

/// A TLS connector trusting `ca_file` alone, or the system's CAs.
fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<MakeTlsConnector, StoreError> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            StoreError::Database(format!(
                "cannot read the CA certificate {}: {e}",
                path.display()
            ))
        })?;
        let ca = native_tls::Certificate::from_pem(&pem).map_err(|e| {
            let path = path.display();
            StoreError::Database(format!("{path} is not a PEM CA certificate: {e}"))
        })?;
        builder
            .add_root_certificate(ca)
            .disable_built_in_roots(true);
    }
    let connector = builder
        .build()
        .map_err(|e| StoreError::Database(format!("cannot set up TLS: {e}")))?;
    Ok(MakeTlsConnector::new(connector))
}

/// The first error of type `E` in `e`'s chain of sources.
fn find_source<'a, E: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut next = Some(e);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// Server errors that may pass: connection trouble, lack of resources, a restart, a lost
/// serialization race or deadlock.
fn is_transient_code(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    matches!(class, "08" | "53" | "57" | "40") || code == &SqlState::LOCK_NOT_AVAILABLE
}

/// An error of an operation on an open connection. The connection is gone (`lost`) or the
/// server says the cause may pass: [`StoreError::Unavailable`]; otherwise
/// [`StoreError::Database`].
pub(super) fn runtime_error(e: &tokio_postgres::Error) -> StoreError {
    if lost(e) || e.code().is_some_and(is_transient_code) {
        StoreError::Unavailable(format!("PostgreSQL: {e}"))
    } else {
        StoreError::Database(format!("PostgreSQL: {}", detailed(e)))
    }
}

/// Whether the connection an error came from can no longer be used.
pub(super) fn lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || find_source::<std::io::Error>(e).is_some()
        || e.code().is_some_and(|code| &code.code()[..2] == "08")
}

/// The server's message with its detail, or the driver's.
fn detailed(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}
