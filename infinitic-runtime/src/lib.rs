//! The runtime of infinitic: the layer that moves bytes between the pure core and the world.
//!
//! - [`tester::WorkflowTester`] runs a workflow in-process with virtual time (unit tests).
//! - [`store`] holds the boundaries ([`store::Transport`], [`store::StateStore`]) and the
//!   embedded SQLite store.
//! - [`worker`] runs services and workflows; [`client::Client`] starts them and awaits results.
//! - [`config`] reads one TOML file (deployment, workers, retries, limits) with environment
//!   overrides.
//! - [`logging`] says what is logged (through `tracing`, never printed).
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod client;
pub mod clock;
pub mod config;
pub mod logging;
mod protocol;
pub mod status;
pub mod store;
pub mod tester;
pub mod topics;
pub mod worker;
