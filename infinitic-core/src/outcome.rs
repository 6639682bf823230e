//! How a durable step ended: the wire form ([`StepOutcome`]) and the typed form workflow code
//! matches on ([`StepError`]).

use crate::{Limits, Payload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The outcome of a durable step as recorded in history and carried by messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// Succeeded with an encoded value (`()` for a fired timer).
    Completed(Payload),
    /// The service returned its own error (encoded) after the retry policy gave up.
    Failed {
        /// The service's error, encoded.
        error: Payload,
        /// A readable rendering of the error.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The service panicked on its last attempt.
    Panicked {
        /// The panic message.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The last attempt (or the whole call) exceeded its timeout.
    TimedOut {
        /// Attempts made.
        attempts: u32,
    },
    /// The step was canceled.
    Canceled,
    /// No worker knows the service, workflow or method.
    Unknown {
        /// Why, in words.
        reason: String,
    },
    /// Arguments or result could not be encoded or decoded (a type mismatch between versions).
    Invalid {
        /// Why, in words.
        reason: String,
    },
}

/// Uninhabited error type of steps that cannot fail with an error of their own (methods not
/// returning `Result`, timers, child workflows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoError {}

impl fmt::Display for NoError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

/// Why a durable step did not produce its value. `E` is the service method's own error type
/// (`NoError` when the method does not return `Result`).
///
/// ```
/// use infinitic_core::StepError;
/// let failure: StepError<String> = StepError::TimedOut { attempts: 3 };
/// assert_eq!(failure.to_string(), "timed out after 3 attempt(s)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepError<E> {
    /// The service returned this error and retries were exhausted (or it was not retryable).
    Failed {
        /// The service's error.
        error: E,
        /// Attempts made.
        attempts: u32,
    },
    /// The service panicked on its last attempt.
    Panicked {
        /// The panic message.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The last attempt timed out.
    TimedOut {
        /// Attempts made.
        attempts: u32,
    },
    /// The step was canceled.
    Canceled,
    /// Unknown service, workflow or method.
    Unknown {
        /// Why, in words.
        reason: String,
    },
    /// Arguments or result could not be encoded or decoded.
    Invalid {
        /// Why, in words.
        reason: String,
    },
}

impl<E: fmt::Debug> fmt::Display for StepError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Failed { error, attempts } => {
                write!(f, "failed after {attempts} attempt(s): {error:?}")
            }
            StepError::Panicked { message, attempts } => {
                write!(f, "panicked after {attempts} attempt(s): {message}")
            }
            StepError::TimedOut { attempts } => write!(f, "timed out after {attempts} attempt(s)"),
            StepError::Canceled => f.write_str("canceled"),
            StepError::Unknown { reason } => write!(f, "unknown: {reason}"),
            StepError::Invalid { reason } => write!(f, "invalid: {reason}"),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for StepError<E> {}

impl StepOutcome {
    /// Converts the wire outcome into the typed result workflow code sees. Results and errors
    /// are decoded within [`Limits::current`]: a payload that crosses them is `Invalid`.
    pub fn into_typed<T: DeserializeOwned, E: DeserializeOwned>(self) -> Result<T, StepError<E>> {
        let limits = Limits::current();
        match self {
            StepOutcome::Completed(bytes) => {
                limits.decode(&bytes).map_err(|e| StepError::Invalid {
                    reason: format!("cannot decode the step's result: {e}"),
                })
            }
            StepOutcome::Failed {
                error,
                message,
                attempts,
            } => match limits.decode::<E>(&error) {
                Ok(error) => Err(StepError::Failed { error, attempts }),
                Err(e) => Err(StepError::Invalid {
                    reason: format!("cannot decode the service's error ({message}): {e}"),
                }),
            },
            StepOutcome::Panicked { message, attempts } => {
                Err(StepError::Panicked { message, attempts })
            }
            StepOutcome::TimedOut { attempts } => Err(StepError::TimedOut { attempts }),
            StepOutcome::Canceled => Err(StepError::Canceled),
            StepOutcome::Unknown { reason } => Err(StepError::Unknown { reason }),
            StepOutcome::Invalid { reason } => Err(StepError::Invalid { reason }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    #[test]
    fn failed_outcome_decodes_the_typed_error() {
        let outcome = StepOutcome::Failed {
            error: encode(&"card declined").unwrap(),
            message: "card declined".into(),
            attempts: 2,
        };
        let typed: Result<u32, StepError<String>> = outcome.into_typed();
        assert_eq!(
            typed,
            Err(StepError::Failed {
                error: "card declined".to_string(),
                attempts: 2
            })
        );
    }

    #[test]
    fn an_error_for_a_method_that_cannot_fail_is_invalid_not_a_panic() {
        let outcome = StepOutcome::Failed {
            error: encode(&"x").unwrap(),
            message: "x".into(),
            attempts: 1,
        };
        let typed: Result<u32, StepError<NoError>> = outcome.into_typed();
        assert!(matches!(typed, Err(StepError::Invalid { .. })));
    }

    #[test]
    fn a_result_of_the_wrong_type_is_invalid() {
        let outcome = StepOutcome::Completed(encode(&"text").unwrap());
        let typed: Result<u32, StepError<NoError>> = outcome.into_typed();
        assert!(matches!(typed, Err(StepError::Invalid { .. })));
    }
}
