//! Bounds on what a payload (arguments, results, errors, workflow outputs) may be: its encoded
//! size and how deeply its values nest.
//!
//! Both are checked where a payload is encoded, before the transition that records it commits,
//! and again where it is received, before anything decodes it. Decoding MessagePack with serde
//! recurses once per nested value, so a payload nested a few thousand levels deep would
//! overflow a worker's stack; the depth check walks the bytes without recursing.

use crate::codec::CodecError;
use crate::depth::ScanError;
use crate::Payload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::Cell;

/// Limits on payloads, applied by workers, clients, the engine and `WorkflowTester`.
///
/// A payload is one encoded value: a call's argument tuple, a service's result or error, a
/// workflow's output. Depth counts nested containers: each sequence, tuple, map and struct is
/// one level, an enum variant with data one more (two for tuple and struct variants, which
/// MessagePack stores as a map holding an array). When encoding, `Some` and newtype structs
/// count one level each too (they are recursion, even though they are stored flat), so a value
/// a sender accepts is never refused by a receiver with the same limits.
///
/// Configure them with `WorkerConfig::limits`, `Client::with_limits` and
/// `WorkflowTester::limits`; give every process the same values.
///
/// ```
/// use infinitic_core::Limits;
/// let limits = Limits {
///     max_payload_bytes: 1024 * 1024,
///     ..Limits::default()
/// };
/// assert_eq!(limits.max_depth, Limits::DEFAULT_MAX_DEPTH);
/// assert!(limits.check(&infinitic_core::encode(&vec![1u8; 10]).unwrap()).is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded payload, in bytes. Default: 4 MiB, so that a message carrying one stays
    /// within Pulsar's default 5 MiB.
    pub max_payload_bytes: usize,
    /// Deepest nesting of a payload's values. Default: 128 levels, far below what overflows a
    /// worker thread's 2 MiB stack when decoding (a few thousand levels in a debug build).
    pub max_depth: usize,
}

impl Limits {
    /// The default [`Limits::max_payload_bytes`]: 4 MiB.
    pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
    /// The default [`Limits::max_depth`]: 128.
    pub const DEFAULT_MAX_DEPTH: usize = 128;
    /// Room for everything but the payload in a message (ids, names, a failure's message).
    pub const MESSAGE_HEADROOM: usize = 1024 * 1024;

    /// The largest message (envelope) a worker reads: twice [`Self::max_payload_bytes`], as a
    /// payload travels as an array of bytes that MessagePack stores in one or two bytes each,
    /// plus [`Self::MESSAGE_HEADROOM`].
    ///
    /// ```
    /// use infinitic_core::Limits;
    /// assert_eq!(Limits::default().max_message_bytes(), 9 * 1024 * 1024);
    /// ```
    pub fn max_message_bytes(&self) -> usize {
        self.max_payload_bytes
            .saturating_mul(2)
            .saturating_add(Self::MESSAGE_HEADROOM)
    }

    /// Checks an encoded payload: its size, then its nesting (without recursing, so any depth
    /// is safe to check). Bytes that are not valid MessagePack pass, as far as they go: the
    /// decoder refuses them with a precise message, and cannot nest deeper than they do.
    ///
    /// ```
    /// use infinitic_core::{LimitError, Limits};
    /// let limits = Limits { max_depth: 2, ..Limits::default() };
    /// let bytes = infinitic_core::encode(&vec![vec![vec![1u8]]]).unwrap();
    /// assert_eq!(limits.check(&bytes), Err(LimitError::TooDeep { limit: 2 }));
    /// ```
    pub fn check(&self, payload: &[u8]) -> Result<(), LimitError> {
        if payload.len() > self.max_payload_bytes {
            return Err(LimitError::TooLarge {
                size: Some(payload.len()),
                limit: self.max_payload_bytes,
            });
        }
        match crate::depth::check_depth(payload, self.max_depth) {
            Err(ScanError::TooDeep) => Err(LimitError::TooDeep {
                limit: self.max_depth,
            }),
            Err(ScanError::Malformed { .. }) | Ok(()) => Ok(()),
        }
    }

    /// Encodes a value like [`crate::encode`], refusing it once it grows past
    /// [`Self::max_payload_bytes`] or nests deeper than [`Self::max_depth`]. Encoding stops at
    /// the first limit crossed: neither a huge value nor a deeply recursive one costs more
    /// than the limits allow (memory, or stack).
    ///
    /// ```
    /// use infinitic_core::{EncodeError, LimitError, Limits};
    /// let limits = Limits { max_payload_bytes: 100, ..Limits::default() };
    /// assert_eq!(
    ///     limits.encode(&vec![0u64; 1000]),
    ///     Err(EncodeError::Limit(LimitError::TooLarge { size: None, limit: 100 }))
    /// );
    /// assert_eq!(limits.encode(&(1u8, "two")), Ok(infinitic_core::encode(&(1u8, "two")).unwrap()));
    /// ```
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Payload, EncodeError> {
        crate::bounded::encode_within(value, self)
    }

    /// [`Self::check`]s a payload, then decodes it like [`crate::decode`].
    pub fn decode<T: DeserializeOwned>(&self, payload: &[u8]) -> Result<T, CodecError> {
        self.check(payload).map_err(|e| CodecError(e.to_string()))?;
        crate::decode(payload)
    }

    /// The limits of the workflow or service task being run on this thread (as configured on
    /// its worker or tester); the defaults anywhere else.
    ///
    /// ```
    /// assert_eq!(infinitic_core::Limits::current(), infinitic_core::Limits::default());
    /// ```
    pub fn current() -> Limits {
        CURRENT.with(|current| current.get()).unwrap_or_default()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: Self::DEFAULT_MAX_PAYLOAD_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}

thread_local! {
    static CURRENT: Cell<Option<Limits>> = const { Cell::new(None) };
}

/// Runs `f` with `limits` as [`Limits::current`], restoring the previous value after (even if
/// `f` unwinds).
pub(crate) fn scoped<R>(limits: Limits, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Limits>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|current| current.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|current| current.replace(Some(limits))));
    f()
}

/// A payload crosses one of the [`Limits`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The payload is larger than [`Limits::max_payload_bytes`] (`size` is `None` when encoding
    /// stopped as soon as it crossed the limit).
    #[error(
        "{} exceeds the payload size limit of {limit} bytes (max_payload_bytes)",
        size.map_or_else(|| "the payload".to_string(), |s| format!("a payload of {s} bytes"))
    )]
    TooLarge {
        /// Its size, when known.
        size: Option<usize>,
        /// The limit.
        limit: usize,
    },
    /// The payload nests deeper than [`Limits::max_depth`].
    #[error("the payload nests deeper than the depth limit of {limit} levels (max_depth)")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

/// Why [`Limits::encode`] refused a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// It crosses a limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// Its `Serialize` implementation failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}
