//! Encoding of arguments, results and errors: MessagePack through rmp-serde.

use serde::{de::DeserializeOwned, Serialize};

/// Encoded bytes of a value (arguments tuple, result, service error).
pub type Payload = Vec<u8>;

/// A value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Encodes a value with MessagePack (compact form: structs as arrays).
///
/// ```
/// let bytes = infinitic_core::encode(&(1u32, "two")).unwrap();
/// let back: (u32, String) = infinitic_core::decode(&bytes).unwrap();
/// assert_eq!(back, (1, "two".to_string()));
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload, CodecError> {
    rmp_serde::to_vec(value).map_err(|e| CodecError(e.to_string()))
}

/// Decodes a value encoded by [`encode`]; a type mismatch or truncated input is an error,
/// never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
}
