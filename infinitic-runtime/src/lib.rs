//! The runtime of infinitic: the layer that moves bytes between the pure core and the world.
//!
//! Today it holds [`tester::WorkflowTester`], which runs a workflow in-process against real or
//! fake services with virtual time. Workers, the embedded store and transports come next.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod tester;
