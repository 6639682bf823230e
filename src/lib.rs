//! # infinitic
//!
//! Durable, event-driven orchestration of business processes as ordinary async Rust.
//!
//! A **service** is a trait of `async fn` methods; `#[service]` turns it into a stub that
//! workflows call (each call a durable step) and a dispatcher that workers run. A **workflow** is
//! a trait plus an implementation whose body is replayed from its history after any crash, so
//! `#[workflow]` also checks at compile time that the body is deterministic.
//!
//! ```
//! use infinitic::prelude::*;
//!
//! #[service]
//! pub trait Greeter {
//!     async fn greet(&self, name: String) -> String;
//! }
//!
//! #[workflow]
//! pub trait Hello {
//!     async fn run(&self, name: String) -> String;
//! }
//!
//! #[derive(Default)]
//! pub struct HelloImpl {
//!     greeter: GreeterStub,
//! }
//!
//! #[workflow]
//! impl Hello for HelloImpl {
//!     async fn run(&self, name: String) -> String {
//!         workflow::sleep(std::time::Duration::from_secs(60)).await; // durable timer
//!         match self.greeter.greet(name).await {                     // durable step
//!             Ok(greeting) => greeting,
//!             Err(failure) => format!("no greeting: {failure}"),
//!         }
//!     }
//! }
//!
//! struct English;
//! impl Greeter for English {
//!     async fn greet(&self, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let run = WorkflowTester::new()
//!     .service(GreeterDispatcher::new(English))
//!     .run(HelloImpl::default, HelloStub.run("Ada".into()))
//!     .await
//!     .unwrap();
//! assert_eq!(run.output, "Hello, Ada!");
//! # }
//! ```
#![deny(missing_docs)]

pub use infinitic_core::RetryPolicy;
pub use infinitic_core::{
    buffered_signals, decode, encode, message, replay, replay_with_limits, task, workflow, Applied,
    ChannelRef, CodecError, Command, CommandId, CommandRecord, CommandSignature, Completion,
    DispatchError, EncodeError, Generation, History, HistoryEvent, IgnoredReason, LimitError,
    Limits, MethodRun, Mismatch, NoError, ParkReason, Payload, Position, Progress, RejectedEvent,
    Replay, Service, ServiceCall, Signal, Signaled, Start, Status, StepError, StepOutcome,
    TaskError, Timestamp, Workflow, WorkflowCall, WorkflowDefinition, WorkflowFactory, WorkflowId,
    WorkflowInstance,
};
pub use infinitic_runtime::client::{Client, ClientError, WorkflowHandle};
pub use infinitic_runtime::clock::{self, Clock, WallClock};
pub use infinitic_runtime::config::{self, Config, ConfigError};
pub use infinitic_runtime::status;
#[cfg(feature = "postgres")]
pub use infinitic_runtime::store::postgres::PostgresStore;
pub use infinitic_runtime::store::{
    self, memory::MemoryStore, sqlite::SqliteStore, StateStore, Transport, WorkflowState,
};
pub use infinitic_runtime::tester::{TestRun, TesterError, WorkflowTester};
pub use infinitic_runtime::worker::{self, CacheStats, RunningWorker, Worker, WorkerConfig};

/// Turns a trait of `async fn` methods into a service.
///
/// Generates, next to the trait:
/// - `{Trait}Stub`, used in workflows: `stub.method(args).await` is a durable step that yields
///   `Result<T, StepError<E>>` (for a method returning `Result<T, E>`; `StepError<NoError>` for
///   a method returning a plain `T`), so `?` and `match` work;
/// - `{Trait}Dispatcher<S>`, used by workers: decodes a call, runs it on your implementation,
///   encodes the result; a panic becomes a failure.
///
/// The service's name is the trait's name; `#[service(name = "Payments")]` overrides it (keep the
/// old name when renaming the trait so running workflows still reach it).
///
/// Methods must be `async fn(&self, args..) -> R` with owned, serde-serializable arguments and
/// result, and no generics.
pub use infinitic_macros::service;

/// Declares a workflow (on a trait) or registers its implementation (on the impl).
///
/// On the trait it generates `{Trait}Stub`, whose methods build [`WorkflowCall`]s for clients
/// and parent workflows. On the impl (and on default method bodies in the trait) it checks every
/// method body for what cannot be replayed
/// (wall clock, sleeping, spawning, randomness, environment, file and network I/O,
/// `HashMap`/`HashSet`, `select!`) and points at the workflow-safe alternative. A reviewed
/// exception is marked on a statement or method with `#[allow_nondeterministic("why")]`.
pub use infinitic_macros::workflow;

/// Everything a workflow or service author needs in scope.
///
/// One `use infinitic::prelude::*;` is enough for a workflow, a service, a worker, a client and
/// a test:
///
/// ```no_run
/// use infinitic::prelude::*;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::open("app.db", OpenMode::CreateIfMissing)?;
/// let worker = Worker::new(store.clone()).config(WorkerConfig::default()).start();
/// let client = Client::new(store);
/// # let _ = (client, RetryPolicy::default(), Durability::Full, MemoryStore::new());
/// worker.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub mod prelude {
    pub use crate::{
        service, workflow,
        workflow::{
            Channel, Either, Filter, OneOf2, OneOf3, OneOf4, OneOf5, OneOf6, OneOf7, OneOf8,
        },
        Client, ClientError, MemoryStore, NoError, RetryPolicy, SqliteStore, StepError,
        TesterError, Worker, WorkerConfig, WorkflowFactory, WorkflowState, WorkflowTester,
    };
    pub use infinitic_runtime::store::sqlite::{Durability, OpenMode};
}

/// Support for generated code: not a public API, may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use infinitic_core::workflow::Channel;
    pub use infinitic_core::{
        decode, ChannelRef, CodecError, DispatchError, NoError, Service, ServiceCall, TaskError,
        TaskFuture, Workflow, WorkflowCall, WorkflowFuture,
    };
    pub use std::boxed::Box;
    pub use std::sync::Arc;

    use infinitic_core::{CatchUnwind, Limits, Payload};
    use serde::{de::DeserializeOwned, Serialize};
    use std::future::Future;

    /// What an argument or a result must be to travel in a message. Generated code requires
    /// it of each argument type alone (never of the argument tuple), so a type that is not
    /// serializable gets one error, at the type, saying what to derive.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot travel as an argument or a result of a workflow or service",
        label = "not serializable",
        note = "arguments and results are sent as messages: derive `serde::Serialize` and \
                `serde::Deserialize` for `{Self}` (`#[derive(Serialize, Deserialize)]`)"
    )]
    pub trait Message: Serialize + DeserializeOwned + Send + 'static {}

    // Not recommended in errors: the error names `Message` (with its note) instead of listing
    // each serde trait the type lacks.
    #[diagnostic::do_not_recommend]
    impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

    /// Compile-time check that a type can travel as a message.
    pub fn assert_message<T: Message>() {}

    /// How generated code encodes and decodes one method's argument tuple `T`: built by
    /// `args0` … `args16`, which require each argument type alone to be a [`Message`]. The
    /// stub and the dispatcher both call the same one with the same type tokens, so an
    /// unfit type gets one error, at the type (the compiler reports it once).
    pub struct ArgsCodec<T> {
        /// Wraps the argument tuple for a call.
        pub encode: fn(T) -> infinitic_core::Args,
        /// Decodes the argument tuple of a received call.
        pub decode: fn(&[u8]) -> Result<T, CodecError>,
    }

    macro_rules! args_codecs {
        ($($name:ident($($arg:ident),*);)*) => {$(
            #[doc = concat!("The codec of a method with these argument types (",
                stringify!($($arg),*), ").")]
            pub fn $name<$($arg: Message),*>() -> ArgsCodec<($($arg,)*)> {
                ArgsCodec {
                    encode: infinitic_core::Args::new,
                    decode: |bytes| decode(bytes),
                }
            }
        )*};
    }

    args_codecs! {
        args0();
        args1(A0);
        args2(A0, A1);
        args3(A0, A1, A2);
        args4(A0, A1, A2, A3);
        args5(A0, A1, A2, A3, A4);
        args6(A0, A1, A2, A3, A4, A5);
        args7(A0, A1, A2, A3, A4, A5, A6);
        args8(A0, A1, A2, A3, A4, A5, A6, A7);
        args9(A0, A1, A2, A3, A4, A5, A6, A7, A8);
        args10(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9);
        args11(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);
        args12(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11);
        args13(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12);
        args14(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13);
        args15(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14);
        args16(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15);
    }

    /// Compile-time check that a service error can be shown in failure reports.
    pub fn assert_error<E: std::fmt::Debug>() {}

    /// A task future that fails at once.
    pub fn ready_error(error: TaskError) -> TaskFuture {
        Box::pin(std::future::ready(Err(error)))
    }

    /// Dispatcher answer for a method the service does not have.
    pub fn unknown_method(service: &str, method: &str) -> TaskFuture {
        ready_error(unknown_workflow_method(service, method).into())
    }

    /// Dispatcher answer for undecodable arguments.
    pub fn bad_arguments(service: &str, method: &str, e: CodecError) -> TaskFuture {
        ready_error(bad_workflow_arguments(service, method, e).into())
    }

    /// The error for a method the target does not have.
    pub fn unknown_workflow_method(target: &str, method: &str) -> DispatchError {
        DispatchError::UnknownMethod {
            target: target.to_string(),
            method: method.to_string(),
        }
    }

    /// The error for arguments that do not decode.
    pub fn bad_workflow_arguments(target: &str, method: &str, e: CodecError) -> DispatchError {
        DispatchError::BadArguments {
            target: target.to_string(),
            method: method.to_string(),
            reason: e.to_string(),
        }
    }

    /// Runs a service call, turning a panic into [`TaskError::Panicked`].
    pub fn guard_task<F>(call: F) -> TaskFuture
    where
        F: Future<Output = Result<Payload, TaskError>> + Send + 'static,
    {
        Box::pin(async move {
            match CatchUnwind::new(call).await {
                Ok(result) => result,
                Err(message) => Err(TaskError::Panicked {
                    message: clip(message),
                }),
            }
        })
    }

    /// Encodes a plain method result, within the task's limits.
    pub fn encode_value<T: Serialize>(value: &T) -> Result<Payload, TaskError> {
        Limits::current()
            .encode(value)
            .map_err(|e| TaskError::BadResult {
                reason: e.to_string(),
            })
    }

    /// Encodes a `Result` method result: `Err(e)` becomes [`TaskError::Failed`].
    pub fn encode_fallible<T: Serialize, E: Serialize + std::fmt::Debug>(
        result: Result<T, E>,
    ) -> Result<Payload, TaskError> {
        match result {
            Ok(value) => encode_value(&value),
            Err(error) => Err(TaskError::Failed {
                message: clip(format!("{error:?}")),
                error: encode_value(&error)?,
            }),
        }
    }

    /// Encodes a workflow method's return value, within the run's limits.
    pub fn encode_workflow_output<T: Serialize>(value: &T) -> Result<Payload, String> {
        Limits::current().encode(value).map_err(|e| e.to_string())
    }

    /// Longest failure message (a rendering of the service's error, a panic message) carried
    /// with a failure: the error itself travels encoded, within the payload limits.
    const MAX_MESSAGE_BYTES: usize = 16 * 1024;

    /// Cuts a failure message to [`MAX_MESSAGE_BYTES`] (on a character boundary).
    fn clip(mut message: String) -> String {
        if message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("… (cut)");
        }
        message
    }
}
