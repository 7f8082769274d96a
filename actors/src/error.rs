//! Errors of runtime operations, mapped one to one onto the API's error codes.

use unify_storage::StoreError;

use crate::json::JsonError;

/// Why an operation was not applied.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The addressed record does not exist (or the caller may not see it).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is malformed for the contract; nothing was written.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request conflicts with the current state; `code` is the API error code.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The scope has too much work in flight; retry later.
    #[error("too many operations in flight for this scope")]
    Overloaded,
    /// The actor that owns the data is restarting, failed, or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed; never reported as absence.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

impl OpError {
    pub fn invalid(message: impl Into<String>) -> Self {
        OpError::InvalidArgument(message.into())
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        OpError::Conflict {
            code,
            message: message.into(),
        }
    }
}

impl From<JsonError> for OpError {
    fn from(err: JsonError) -> Self {
        match err {
            JsonError::Syntax(message) => OpError::conflict("MALFORMED_JSON", message),
            JsonError::Data(message) => OpError::invalid(message),
        }
    }
}

/// Maps a store read: `NotFound` becomes [`OpError::NotFound`], anything else stays a storage
/// error.
pub(crate) fn found<T>(result: Result<T, StoreError>, what: &'static str) -> Result<T, OpError> {
    match result {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Err(OpError::NotFound(what)),
        Err(e) => Err(OpError::Storage(e)),
    }
}
