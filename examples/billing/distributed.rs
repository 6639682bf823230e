//! Every mode on the distributed deployment: messages on Apache Pulsar, workflow state in
//! PostgreSQL (features `postgres` and `pulsar`).

use super::hosts::{self, Role};
use super::{clients, Options};
use infinitic::config::{Config, PostgresSection, PulsarSection};
use infinitic::{Client, Worker};

pub async fn run(pulsar: &PulsarSection, postgres: &PostgresSection, config: &Config, o: &Options) {
    let transport = match pulsar.connect().await {
        Ok(transport) => transport,
        Err(e) => {
            eprintln!("cannot connect to Apache Pulsar at {}: {e}", pulsar.url);
            std::process::exit(1);
        }
    };
    if o.mode == "service-worker" {
        // A service worker needs no database: services read and write only their messages.
        let place = format!("Apache Pulsar at {}", pulsar.url);
        hosts::serve_services(transport.clone(), config, o, &place).await;
        transport.close().await;
        return;
    }
    let state = match postgres.connect().await {
        Ok(state) => state,
        Err(e) => {
            eprintln!("cannot open the PostgreSQL store: {e}");
            std::process::exit(1);
        }
    };
    // One clock for every host: the database's (timers are due by it, whatever a host's).
    let clock = state.clock();
    let place = format!("Apache Pulsar at {} + PostgreSQL", pulsar.url);
    match o.mode.as_str() {
        "client" => {
            // Over the broker: starts and signals on Pulsar, results reported back to this
            // client; PostgreSQL is only read.
            let client = Client::with_backends(transport.clone(), state)
                .with_limits(config.limits())
                .with_clock(clock);
            clients::run(&client, o.users, o.months, o.month).await;
        }
        "status" => {
            let client =
                Client::with_backends(transport.clone(), state).with_limits(config.limits());
            clients::status(&client, o.target.as_deref().unwrap_or("billing-user-1")).await;
        }
        "all" => {
            let worker = Worker::with_backends(transport.clone(), state.clone());
            let running =
                hosts::register(worker, Role::Both, config, o, Some(clock.clone())).start();
            let client = Client::with_backends(transport.clone(), state)
                .with_limits(config.limits())
                .with_clock(clock);
            tokio::select! {
                _ = clients::run(&client, o.users, o.months, o.month) => {}
                _ = infinitic::worker::shutdown_signal() => println!("interrupted: run again to resume"),
            }
            running.shutdown().await;
        }
        role => {
            let worker = Worker::with_backends(transport.clone(), state);
            hosts::serve(worker, Role::of(role), config, o, &place, Some(clock)).await;
        }
    }
    // Acknowledgements still queued are sent; what was leased goes back to the broker.
    transport.close().await;
}
