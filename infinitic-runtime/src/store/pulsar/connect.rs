//! Connecting to the broker: authentication, TLS, and a bounded startup that ends in a clear
//! error instead of a hang.

use super::options::PulsarOptions;
use crate::store::StoreError;
use pulsar::message::proto::command_get_topics_of_namespace::Mode;
use pulsar::{
    Authentication, ConnectionRetryOptions, OperationRetryOptions, Pulsar, TokioExecutor,
};
use std::time::Duration;

/// The client type the transport uses.
pub(crate) type Client = Pulsar<TokioExecutor>;

/// Connects and checks that the namespace answers (which proves the credentials too), within
/// `options.startup_timeout`.
pub(crate) async fn connect(options: &PulsarOptions) -> Result<Client, StoreError> {
    let url = &options.url;
    let attempt = async {
        let mut builder = Pulsar::builder(url.clone(), TokioExecutor)
            .with_connection_retry_options(ConnectionRetryOptions {
                connection_timeout: options.startup_timeout.min(Duration::from_secs(10)),
                ..ConnectionRetryOptions::default()
            })
            .with_operation_retry_options(OperationRetryOptions {
                operation_timeout: options.operation_timeout,
                ..OperationRetryOptions::default()
            });
        if let Some(token) = &options.token {
            builder = builder.with_auth(Authentication {
                name: "token".into(),
                data: token.clone().into_bytes(),
            });
        }
        if let Some(ca) = &options.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| {
                StoreError::Broker(format!("cannot read the TLS CA file {}: {e}", ca.display()))
            })?;
            builder = builder.with_certificate_chain(pem);
        }
        if options.tls_allow_insecure {
            builder = builder.with_allow_insecure_connection(true);
        }
        let client = builder.build().await.map_err(|e| refused(options, &e))?;
        client
            .get_topics_of_namespace(options.namespace.clone(), Mode::Persistent)
            .await
            .map_err(|e| refused(options, &e))?;
        Ok(client)
    };
    match tokio::time::timeout(options.startup_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Broker(format!(
            "no usable answer from the Pulsar broker at {url} within {:?}: is it running, is the URL \
             right, and are the credentials accepted?",
            options.startup_timeout
        ))),
    }
}

/// A startup failure, worded for the person who configured it.
fn refused(options: &PulsarOptions, error: &pulsar::Error) -> StoreError {
    let url = &options.url;
    let text = error.to_string();
    let lower = text.to_ascii_lowercase();
    // The client reports a handshake the broker rejected (it answered, then refused) only as a
    // "fatal error"; with a reachable broker that is the credentials or TLS.
    if lower.contains("fatal error when connecting") {
        let hint = match (&options.token, url.starts_with("pulsar+ssl")) {
            (Some(_), _) => "the token was refused (wrong, expired or signed with another key)",
            (None, false) => {
                "the broker may require authentication (set a token) or TLS (use pulsar+ssl://)"
            }
            (None, true) => "the TLS handshake or the broker's authentication failed",
        };
        StoreError::Broker(format!(
            "the Pulsar broker at {url} refused the connection: {hint} ({text})"
        ))
    } else if lower.contains("auth") {
        StoreError::Broker(format!(
            "the Pulsar broker at {url} refused the credentials (check the token): {text}"
        ))
    } else if lower.contains("tls") || lower.contains("certificate") {
        StoreError::Broker(format!(
            "TLS with the Pulsar broker at {url} failed: {text}"
        ))
    } else {
        StoreError::Broker(format!("cannot use the Pulsar broker at {url}: {text}"))
    }
}

/// A failure after startup: the broker may come back, so it is transient.
pub(crate) fn unavailable(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("pulsar: {what}: {error}"))
}
