//! Versioned envelopes for everything that crosses a transport.
//!
//! Wire form: a magic byte, a protocol version byte, then the [`Message`] as MessagePack with
//! field names (so fields can be added with defaults without breaking older readers). Decoding
//! never panics: every failure is a [`DecodeError`].

use crate::depth::{check_depth, ScanError};
use crate::{
    CommandId, Generation, Limits, MethodRun, Payload, StepOutcome, Timestamp, WorkflowId,
};
use serde::{Deserialize, Serialize};

/// First byte of every envelope: rejects bytes that are not ours at once.
pub const MAGIC: u8 = 0xB7;

/// The protocol version this build writes and reads.
pub const PROTOCOL_VERSION: u8 = 1;

/// How deeply an envelope's own structure may nest. Envelopes nest a handful of levels
/// (payloads are opaque byte arrays inside them); anything deeper is refused before decoding.
pub const MAX_ENVELOPE_DEPTH: usize = 32;

/// Everything workers, clients and engines say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Start a method run on a workflow instance.
    StartWorkflow {
        /// Instance id.
        workflow_id: WorkflowId,
        /// Which use of that id the instance is (left out for the first).
        #[serde(default, skip_serializing_if = "Generation::is_first")]
        generation: Generation,
        /// Workflow name.
        workflow: String,
        /// Method name.
        method: String,
        /// Encoded arguments.
        input: Payload,
        /// Who waits for the result: the parent step, if this is a child workflow.
        parent: Option<ParentStep>,
        /// The sender stored the instance as pending (its first version) in the commit that
        /// published this message, so the worker need not look it up on first delivery.
        #[serde(default)]
        pending: bool,
        /// A client's response topic: the instance reports there how it ended (also when
        /// it exists already: a start sent again only adds the topic).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
    },
    /// Asks an instance to report how it ended to a client's response topic: at once if it
    /// has ended, else when it does.
    WaitForResult {
        /// The instance.
        workflow_id: WorkflowId,
        /// The client's response topic.
        reply_to: String,
    },
    /// Run one attempt of a service task.
    ExecuteTask {
        /// The command that requested it: the task's stable id.
        task: CommandId,
        /// The requesting workflow's name: where the outcome goes.
        workflow: String,
        /// Service name.
        service: String,
        /// Method name.
        method: String,
        /// Encoded arguments.
        args: Payload,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A command's outcome, for the workflow that issued it.
    CommandCompleted {
        /// The command.
        command: CommandId,
        /// How it ended.
        outcome: StepOutcome,
        /// When it ended.
        at: Timestamp,
    },
    /// A signal for a channel of a running instance.
    SignalSent {
        /// The target instance.
        workflow_id: WorkflowId,
        /// The channel.
        channel: String,
        /// The encoded value.
        value: Payload,
        /// The sender's id for this signal: sent again with the same id, it changes nothing.
        id: String,
    },
    /// A method run ended.
    WorkflowCompleted {
        /// Instance id.
        workflow_id: WorkflowId,
        /// The run.
        run: MethodRun,
        /// Its encoded result, or why it has none.
        outcome: StepOutcome,
    },
}

impl Message {
    /// Starts `method` of `workflow` on instance `workflow_id`; `parent` waits for it, if set.
    /// `pending`: the sender stored the instance as pending in the commit that publishes this.
    pub fn start_workflow(
        workflow_id: WorkflowId,
        workflow: impl Into<String>,
        method: impl Into<String>,
        input: Payload,
        parent: Option<ParentStep>,
        pending: bool,
    ) -> Self {
        Message::StartWorkflow {
            workflow_id,
            generation: Generation::FIRST,
            workflow: workflow.into(),
            method: method.into(),
            input,
            parent,
            pending,
            reply_to: None,
        }
    }

    /// Asks instance `workflow_id` to report how it ended to the topic `reply_to`.
    pub fn wait_for_result(workflow_id: WorkflowId, reply_to: impl Into<String>) -> Self {
        Message::WaitForResult {
            workflow_id,
            reply_to: reply_to.into(),
        }
    }

    /// Runs attempt `attempt` of the task `task` (a command of a `workflow`) on a service.
    pub fn execute_task(
        task: CommandId,
        workflow: impl Into<String>,
        service: impl Into<String>,
        method: impl Into<String>,
        args: Payload,
        attempt: u32,
    ) -> Self {
        Message::ExecuteTask {
            task,
            workflow: workflow.into(),
            service: service.into(),
            method: method.into(),
            args,
            attempt,
        }
    }

    /// Sends `value` to channel `channel` of instance `workflow_id`; `id` names this signal
    /// (a signal sent again with the same id changes nothing).
    pub fn signal(
        workflow_id: WorkflowId,
        channel: impl Into<String>,
        value: Payload,
        id: impl Into<String>,
    ) -> Self {
        Message::SignalSent {
            workflow_id,
            channel: channel.into(),
            value,
            id: id.into(),
        }
    }

    /// Tells the workflow that issued `command` how it ended, `at` when.
    pub fn command_completed(command: CommandId, outcome: StepOutcome, at: Timestamp) -> Self {
        Message::CommandCompleted {
            command,
            outcome,
            at,
        }
    }

    /// The message's id: a function of what it says, so the sender sets it by writing the
    /// message, and a message published again (by a relay after a crash, or by a sender that
    /// repeats itself) keeps it. A state store records the ids of the messages its transitions
    /// consumed, so a redelivered message is recognised whatever the broker calls it.
    ///
    /// ```
    /// use infinitic_core::message::Message;
    /// use infinitic_core::{CommandId, MethodRun, StepOutcome, Timestamp, WorkflowId};
    /// let command = CommandId::new(WorkflowId::new("wf"), MethodRun(0), 2);
    /// let done = Message::command_completed(command, StepOutcome::Canceled, Timestamp::from_millis(1));
    /// assert_eq!(done.id().as_str(), "done:wf/0/2");
    /// ```
    pub fn id(&self) -> MessageId {
        MessageId(match self {
            Message::StartWorkflow {
                workflow_id,
                generation,
                ..
            } => match generation.0 {
                0 => format!("start:{workflow_id}"),
                g => format!("start:{workflow_id}@{g}"),
            },
            Message::WaitForResult {
                workflow_id,
                reply_to,
            } => format!("wait:{workflow_id}:{reply_to}"),
            Message::ExecuteTask { task, attempt, .. } => format!("task:{task}#{attempt}"),
            Message::CommandCompleted { command, .. } => format!("done:{command}"),
            Message::SignalSent {
                workflow_id, id, ..
            } => format!("signal:{workflow_id}:{id}"),
            Message::WorkflowCompleted {
                workflow_id, run, ..
            } => {
                format!("completed:{workflow_id}/{run}")
            }
        })
    }

    /// Encodes this message into its envelope (see [`encode_message`]).
    pub fn encode(&self) -> Vec<u8> {
        encode_message(self)
    }
}

/// The id of a message (see [`Message::id`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// An id given by hand (messages that are not [`Message`]s, tests); a message's own id is
    /// [`Message::id`].
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The step of a parent workflow that waits for a child workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentStep {
    /// The parent's workflow name.
    pub workflow: String,
    /// The parent's command.
    pub command: CommandId,
}

/// Bytes that are not a message this build can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// The first byte is not [`MAGIC`]: not an infinitic message.
    #[error("not an infinitic message (first byte {0:#04x})")]
    NotAnEnvelope(u8),
    /// Written by a protocol version this build does not read.
    #[error("unsupported protocol version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The message's version.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The body does not decode.
    #[error("malformed message body: {0}")]
    Malformed(String),
    /// Larger than [`Limits::max_message_bytes`].
    #[error(
        "a message of {size} bytes exceeds the message size limit of {limit} bytes \
         (twice max_payload_bytes, plus headroom)"
    )]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body nests deeper than [`MAX_ENVELOPE_DEPTH`].
    #[error("the message nests deeper than {limit} levels (MAX_ENVELOPE_DEPTH)")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

/// Encodes a message into its envelope.
///
/// ```
/// use infinitic_core::message::{decode_message, encode_message, Message};
/// use infinitic_core::{CommandId, MethodRun, StepOutcome, Timestamp, WorkflowId};
/// let msg = Message::CommandCompleted {
///     command: CommandId::new(WorkflowId::new("wf"), MethodRun(0), 0),
///     outcome: StepOutcome::Completed(vec![]),
///     at: Timestamp::from_millis(5),
/// };
/// assert_eq!(decode_message(&encode_message(&msg)).unwrap(), msg);
/// ```
pub fn encode_message(message: &Message) -> Vec<u8> {
    let mut bytes = vec![MAGIC, PROTOCOL_VERSION];
    // Writing into a Vec cannot fail and every field type serializes.
    rmp_serde::encode::write_named(&mut bytes, message)
        .expect("messages always encode into memory");
    bytes
}

/// Decodes an envelope, first refusing one larger than [`Limits::max_message_bytes`].
/// (The payloads inside are checked against the limits by whoever decodes them.)
///
/// ```
/// use infinitic_core::message::{decode_message_within, DecodeError, MAGIC, PROTOCOL_VERSION};
/// use infinitic_core::Limits;
/// let mut deep = vec![MAGIC, PROTOCOL_VERSION];
/// deep.extend(std::iter::repeat(0x91).take(100_000)); // arrays in arrays in ...
/// assert!(matches!(
///     decode_message_within(&deep, &Limits::default()),
///     Err(DecodeError::TooDeep { limit: 32 })
/// ));
/// ```
pub fn decode_message_within(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    let limit = limits.max_message_bytes();
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    decode_message(bytes)
}

/// Decodes an envelope. Its nesting is checked before the body is decoded, so no bytes can
/// make decoding recurse deeply.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    match bytes {
        [] => Err(DecodeError::Empty),
        [magic, ..] if *magic != MAGIC => Err(DecodeError::NotAnEnvelope(*magic)),
        [_] => Err(DecodeError::Malformed("no version byte".into())),
        [_, version, ..] if *version != PROTOCOL_VERSION => Err(DecodeError::UnsupportedVersion {
            found: *version,
            supported: PROTOCOL_VERSION,
        }),
        [_, _, body @ ..] => {
            // Only depth is decided here: the decoder says precisely what else is wrong.
            if let Err(ScanError::TooDeep) = check_depth(body, MAX_ENVELOPE_DEPTH) {
                return Err(DecodeError::TooDeep {
                    limit: MAX_ENVELOPE_DEPTH,
                });
            }
            rmp_serde::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message::ExecuteTask {
            task: CommandId::new(WorkflowId::new("wf-1"), MethodRun(0), 7),
            workflow: "Billing".into(),
            service: "PaymentService".into(),
            method: "request".into(),
            args: crate::encode(&(42u64, 1999u64)).unwrap(),
            attempt: 1,
        }
    }

    #[test]
    fn round_trips() {
        let msg = sample();
        assert_eq!(decode_message(&encode_message(&msg)), Ok(msg));
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let bytes = encode_message(&sample());
        for len in 0..bytes.len() {
            assert!(
                decode_message(&bytes[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn deep_or_huge_envelopes_are_refused_before_decoding() {
        let mut deep = vec![MAGIC, PROTOCOL_VERSION];
        deep.extend(std::iter::repeat_n(0x81, 50_000).flat_map(|map| [map, 0xc0]));
        deep.push(0xc0);
        assert_eq!(
            decode_message(&deep),
            Err(DecodeError::TooDeep {
                limit: MAX_ENVELOPE_DEPTH
            })
        );
        let limits = Limits {
            max_payload_bytes: 10,
            ..Limits::default()
        };
        assert!(decode_message_within(&encode_message(&sample()), &limits).is_ok());
        let huge = vec![MAGIC; limits.max_message_bytes() + 1];
        assert_eq!(
            decode_message_within(&huge, &limits),
            Err(DecodeError::TooLarge {
                size: huge.len(),
                limit: limits.max_message_bytes()
            })
        );
    }

    #[test]
    fn foreign_and_future_bytes_are_rejected_with_reason() {
        assert_eq!(
            decode_message(b"{\"json\":1}"),
            Err(DecodeError::NotAnEnvelope(b'{'))
        );
        let mut bytes = encode_message(&sample());
        bytes[1] = 9;
        assert_eq!(
            decode_message(&bytes),
            Err(DecodeError::UnsupportedVersion {
                found: 9,
                supported: PROTOCOL_VERSION
            })
        );
        assert!(matches!(
            decode_message(&[MAGIC, PROTOCOL_VERSION, 0xc1]),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// Ids are part of what is stored (consumed-message records): they must never change for
    /// a message that earlier builds sent.
    #[test]
    fn message_ids_are_functions_of_the_message_and_stay_as_they_are() {
        let command = CommandId::new(WorkflowId::new("wf"), MethodRun(0), 4);
        let later = command.clone().in_generation(Generation(2));
        let ids = [
            (sample(), "task:wf-1/0/7#1"),
            (
                Message::start_workflow(WorkflowId::new("wf"), "W", "run", vec![], None, true),
                "start:wf",
            ),
            (
                Message::command_completed(
                    command,
                    StepOutcome::Canceled,
                    Timestamp::from_millis(1),
                ),
                "done:wf/0/4",
            ),
            (
                Message::command_completed(later, StepOutcome::Canceled, Timestamp::from_millis(1)),
                "done:wf@2/0/4",
            ),
        ];
        for (message, id) in ids {
            assert_eq!(message.id().as_str(), id);
            let again = decode_message(&encode_message(&message)).unwrap();
            assert_eq!(again.id(), message.id(), "the same after a round trip");
        }
    }
}
