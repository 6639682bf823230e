//! Topic names: one per service (its tasks) and one per workflow (its events, keyed by
//! instance id).

/// What every service topic starts with.
pub const SERVICE_PREFIX: &str = "service:";

/// The topic a service's tasks are published on.
pub fn service(name: &str) -> String {
    format!("{SERVICE_PREFIX}{name}")
}

/// What every workflow topic starts with.
pub const WORKFLOW_PREFIX: &str = "workflow:";

/// The topic a workflow's events (starts, step outcomes, timers) are published on.
pub fn workflow(name: &str) -> String {
    format!("{WORKFLOW_PREFIX}{name}")
}

/// What every client response topic starts with.
pub const CLIENT_PREFIX: &str = "client:";

/// The response topic of the client named `name`: instances report there how they ended.
pub fn client(name: &str) -> String {
    format!("{CLIENT_PREFIX}{name}")
}
