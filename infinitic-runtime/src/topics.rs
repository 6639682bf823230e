//! Topic names: one per service (its tasks) and one per workflow (its events, keyed by
//! instance id).

/// The topic a service's tasks are published on.
pub fn service(name: &str) -> String {
    format!("service:{name}")
}

/// The topic a workflow's events (starts, step outcomes, timers) are published on.
pub fn workflow(name: &str) -> String {
    format!("workflow:{name}")
}
