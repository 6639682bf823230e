//! The bytes a database store keeps for an instance: its state, its parent step and the history
//! events of each transition, each encoded with [`infinitic_core::encode`] (MessagePack). One
//! format for every database store, so their rows hold the same bytes.

use super::{StoreError, Transition};
use infinitic_core::{decode, encode, CodecError, HistoryEvent};

/// The encoded columns of one transition.
pub(crate) struct Columns {
    /// The new state.
    pub(crate) state: Vec<u8>,
    /// The header's parent step, when the transition has a header with one.
    pub(crate) parent: Option<Vec<u8>>,
    /// The appended events as one value (one history row per transition); `None` when nothing
    /// is appended.
    pub(crate) events: Option<Vec<u8>>,
    /// The clients' response topics, when the transition replaces them.
    pub(crate) report_to: Option<Vec<u8>>,
}

impl Columns {
    /// Encodes `t`'s columns; a value that cannot be encoded fails the transition.
    pub(crate) fn of(t: &Transition) -> Result<Self, StoreError> {
        let encoded = |e: CodecError| {
            StoreError::Database(format!("cannot encode workflow {}: {e}", t.workflow_id))
        };
        let parent = t.header.as_ref().and_then(|h| h.parent.as_ref());
        Ok(Self {
            state: encode(&t.state).map_err(encoded)?,
            parent: parent.map(encode).transpose().map_err(encoded)?,
            events: match t.append.is_empty() {
                true => None,
                false => Some(encode(&t.append).map_err(encoded)?),
            },
            report_to: t
                .report_to
                .as_ref()
                .map(encode)
                .transpose()
                .map_err(encoded)?,
        })
    }
}

/// The clients' response topics a `report_to` column holds (none when it is empty).
pub(crate) fn decode_report_to(bytes: Option<&[u8]>) -> Result<Vec<String>, CodecError> {
    bytes.map_or(Ok(Vec::new()), decode)
}

/// The events one history row holds.
pub(crate) fn decode_events(bytes: &[u8]) -> Result<Vec<HistoryEvent>, CodecError> {
    decode(bytes)
}
