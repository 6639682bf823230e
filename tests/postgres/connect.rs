//! Connecting: errors that say what to do (try again later, fix the credentials, fix the
//! CA), TLS for real, and a connection lost at run time.

use super::pg::{self, Server};
use infinitic::store::postgres::{PostgresOptions, PostgresStore, PostgresTls};
use infinitic::store::{CommitOutcome, StoreError, Transition, WorkflowHeader};
use infinitic::{Generation, StateStore, Timestamp, WorkflowId, WorkflowState};
use std::time::Duration;

fn create(id: &str) -> Transition {
    Transition {
        workflow_id: WorkflowId::new(id),
        expected_version: 0,
        header: Some(WorkflowHeader {
            generation: Generation::FIRST,
            workflow: "Test".into(),
            method: "run".into(),
            input: Vec::new(),
            started_at: Timestamp::from_millis(1),
            parent: None,
        }),
        state: WorkflowState::Running,
        append: Vec::new(),
        outbox: Vec::new(),
        consumed: None,
        dead_letter: None,
        report_to: None,
    }
}

async fn connect_error(url: &str, options: PostgresOptions) -> StoreError {
    match PostgresStore::connect(url, options).await {
        Ok(_) => panic!("connected"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn an_unreachable_server_is_transient_and_named() {
    // Runs without a server: nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://infinitic:secret@127.0.0.1:{port}/infinitic");
    let options = PostgresOptions {
        connect_timeout: Duration::from_secs(2),
        ..PostgresOptions::default()
    };
    let error = connect_error(&url, options).await;
    assert!(error.is_transient(), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}")),
        "{message}"
    );
    assert!(!message.contains("secret"), "never the password: {message}");
}

#[tokio::test]
async fn a_bad_url_is_a_clear_error() {
    let error = connect_error(
        "postgres://a:b@host:notaport/db",
        PostgresOptions::default(),
    )
    .await;
    assert!(matches!(error, StoreError::Database(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("invalid PostgreSQL connection URL"),
        "{error}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_naming_authentication() {
    let Some(server) = pg::server() else { return };
    let (head, tail) = server.url.split_once('@').unwrap();
    let (user, _) = head.rsplit_once(':').unwrap();
    let url = format!("{user}:wrong-password@{tail}");
    let error = connect_error(&url, PostgresOptions::default()).await;
    assert!(!error.is_transient(), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("refused the credentials of user infinitic"),
        "{message}"
    );
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(!message.contains("wrong-password"), "{message}");
}

/// The server's TLS CAs, or `None` (skipped with a message, failing under CI).
fn tls(server: &Server) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    match (&server.ca, &server.wrong_ca) {
        (Some(ca), Some(wrong)) => Some((ca.clone(), wrong.clone())),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("a PostgreSQL with TLS required under CI=true: scripts/postgres.sh start --tls")
        }
        _ => {
            eprintln!("skipped: the server has no TLS (INFINITIC_PG_CA unset)");
            None
        }
    }
}

#[tokio::test]
async fn tls_with_the_right_ca_connects_and_every_connection_is_encrypted() {
    let Some(server) = pg::server() else { return };
    let Some((ca, _)) = tls(&server) else { return };
    let url = server.fresh_database("tls");
    let options = PostgresOptions {
        tls: PostgresTls::Required { ca_file: Some(ca) },
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect(&url, options).await.unwrap();
    let outcome = store.commit(vec![create("wf-1")]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    assert!(store
        .load(&WorkflowId::new("wf-1"), true)
        .await
        .unwrap()
        .is_some());
    let database = url.rsplit_once('/').unwrap().1;
    let connections = server.psql(&format!(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{database}'"
    ));
    // The writer and the readers that were opened (the clock's measure and the load may or
    // may not share one): every one with TLS.
    let (encrypted, all) = connections.split_once('|').expect("two counts");
    assert_eq!(encrypted, all, "every connection has TLS: {connections}");
    assert!(
        all.parse::<u32>().unwrap() >= 2,
        "the writer and a reader: {connections}"
    );
}

#[tokio::test]
async fn tls_with_a_wrong_ca_is_a_clear_error() {
    let Some(server) = pg::server() else { return };
    let Some((_, wrong)) = tls(&server) else {
        return;
    };
    let options = PostgresOptions {
        tls: PostgresTls::Required {
            ca_file: Some(wrong),
        },
        ..PostgresOptions::default()
    };
    let error = connect_error(&server.url, options).await;
    assert!(!error.is_transient(), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("TLS with PostgreSQL at 127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("CA certificate"), "{message}");
    assert!(message.contains("certificate verify failed"), "{message}");
}

#[tokio::test]
async fn a_missing_ca_file_is_a_clear_error() {
    let options = PostgresOptions {
        tls: PostgresTls::Required {
            ca_file: Some("/nonexistent/ca.crt".into()),
        },
        ..PostgresOptions::default()
    };
    let error = connect_error("postgres://u:p@127.0.0.1:1/db", options).await;
    let message = error.to_string();
    assert!(
        message.contains("cannot read the CA certificate /nonexistent/ca.crt"),
        "{message}"
    );
}

#[tokio::test]
async fn a_connection_lost_at_run_time_is_transient_and_the_store_connects_again() {
    let Some(server) = pg::server() else { return };
    let url = server.fresh_database("lost");
    let store = PostgresStore::connect(&url, PostgresOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.commit(vec![create("wf-1")]).await.unwrap(),
        vec![CommitOutcome::Committed]
    );
    assert!(store
        .load(&WorkflowId::new("wf-1"), false)
        .await
        .unwrap()
        .is_some());
    let database = url.rsplit_once('/').unwrap().1;
    let killed = server.psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{database}'"
    ));
    // The writer, the reader that measured the database's clock, the reader of the load.
    assert_eq!(killed, "3", "the writer and two readers");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Each operation either fails as transient (nothing applied) or, having seen the
    // connection closed, connects again first; the next one works in any case.
    match store.commit(vec![create("wf-2")]).await {
        Ok(outcome) => assert_eq!(outcome, vec![CommitOutcome::Committed]),
        Err(e) => assert!(e.is_transient(), "{e:?}"),
    }
    let outcome = store.commit(vec![create("wf-3")]).await.unwrap();
    assert_eq!(outcome, vec![CommitOutcome::Committed]);
    for id in ["wf-1", "wf-3"] {
        let loaded = match store.load(&WorkflowId::new(id), false).await {
            Err(e) if e.is_transient() => store.load(&WorkflowId::new(id), false).await,
            other => other,
        };
        assert!(loaded.unwrap().is_some(), "{id}");
    }
}
