//! What a worker process hosts: the billing services, the billing workflow, or both; on
//! whichever backends it is given.

use super::services::*;
use super::{contracts::*, workflow, Options};
use infinitic::config::Config;
use infinitic::store::{StateStore, Transport};
use infinitic::{Clock, Worker};
use std::sync::Arc;

/// What a worker process hosts.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// The services and the workflow (`worker`, and the demo run).
    Both,
    /// The services only (`service-worker`).
    Services,
    /// The workflow only (`workflow-worker`).
    Workflows,
}

impl Role {
    /// The role of a worker mode of the command line.
    pub fn of(mode: &str) -> Self {
        match mode {
            "service-worker" => Role::Services,
            "workflow-worker" => Role::Workflows,
            _ => Role::Both,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Both => "worker",
            Role::Services => "service worker",
            Role::Workflows => "workflow worker",
        }
    }
}

/// `worker` with what `role` hosts, configured by `config`; `clock` replaces the wall clock
/// (distributed workers use the database's, so hosts agree on when timers are due).
pub fn register<T: Transport, S: StateStore>(
    worker: Worker<T, S>,
    role: Role,
    config: &Config,
    o: &Options,
    clock: Option<Arc<dyn Clock>>,
) -> Worker<T, S> {
    let worker = match role {
        Role::Workflows => worker,
        Role::Both | Role::Services => services(worker, o),
    };
    let worker = match role {
        Role::Services => worker,
        Role::Both | Role::Workflows => worker.workflow(workflow::Billing::default),
    };
    let mut settings = config.worker_config();
    if let Some(clock) = clock {
        settings.clock = clock;
    }
    worker.config(settings)
}

/// `worker` with the billing services.
fn services<T: Transport, S>(worker: Worker<T, S>, o: &Options) -> Worker<T, S> {
    worker
        .service(SubscriptionServiceDispatcher::new(
            FixedTermSubscriptions::new(workflow::month_of(std::time::SystemTime::now()), o.months),
        ))
        .service(ConsumptionServiceDispatcher::new(Metering))
        .service(PaymentServiceDispatcher::new(Payments::new(Some(UserId(
            3,
        )))))
        .service(InvoiceServiceDispatcher::new(Invoicing))
        .service(EmailServiceDispatcher::new(Mailer))
}

/// Runs the billing services on `transport` alone (no state store: a service worker needs no
/// database) until Ctrl-C or SIGTERM; `place` says where.
#[cfg_attr(not(all(feature = "postgres", feature = "pulsar")), allow(dead_code))]
pub async fn serve_services<T: Transport>(transport: T, config: &Config, o: &Options, place: &str) {
    let name = Role::Services.name();
    println!("{name} running on {place} (Ctrl-C to stop)");
    services(Worker::services_only(transport), o)
        .config(config.worker_config())
        .run_until_signal()
        .await;
    println!("{name} stopped: in-flight steps finished and committed");
}

/// Runs `worker` with what `role` hosts until Ctrl-C or SIGTERM; `place` says where.
pub async fn serve<T: Transport, S: StateStore>(
    worker: Worker<T, S>,
    role: Role,
    config: &Config,
    o: &Options,
    place: &str,
    clock: Option<Arc<dyn Clock>>,
) {
    let name = role.name();
    println!("{name} running on {place} (Ctrl-C to stop)");
    register(worker, role, config, o, clock)
        .run_until_signal()
        .await;
    println!("{name} stopped: in-flight steps finished and committed");
}
