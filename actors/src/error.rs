//! Errors of runtime operations and the API's error codes (SPEC 4.2).
//!
//! A leaf: it imports no actor and no service. [`Code`] is the one table of error codes: its
//! name on the wire and its HTTP status are given in one exhaustive `match` each, so a new
//! code cannot be forgotten in one of them. The HTTP layer, the import's per-line errors and
//! the webhook's answers all read it.

use unify_storage::StoreError;

use crate::json::JsonError;

/// Every error code of the API (SPEC 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidArgument,
    /// A member (or an event's sender) without an identity.
    EmptyExternalId,
    MalformedJson,
    Unauthenticated,
    /// A channel webhook whose signature does not verify.
    InvalidSignature,
    Forbidden,
    /// A channel event whose tenant differs from its channel's.
    TenantMismatch,
    NotFound,
    CdhAlreadyConnected,
    CdhNotConnected,
    UnifyScopeSettingExists,
    OrganizationExists,
    MissingOrganization,
    PayloadTooLarge,
    UnsupportedMediaType,
    Overloaded,
    Unavailable,
    Internal,
}

impl Code {
    /// Returns the code as the API writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::EmptyExternalId => "EMPTY_EXTERNAL_ID",
            Code::MalformedJson => "MALFORMED_JSON",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::InvalidSignature => "INVALID_SIGNATURE",
            Code::Forbidden => "FORBIDDEN",
            Code::TenantMismatch => "TENANT_MISMATCH",
            Code::NotFound => "NOT_FOUND",
            Code::CdhAlreadyConnected => "CDH_ALREADY_CONNECTED",
            Code::CdhNotConnected => "CDH_NOT_CONNECTED",
            Code::UnifyScopeSettingExists => "UNIFY_SCOPE_SETTING_EXISTS",
            Code::OrganizationExists => "ORGANIZATION_EXISTS",
            Code::MissingOrganization => "MISSING_ORGANIZATION",
            Code::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Code::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Code::Overloaded => "OVERLOADED",
            Code::Unavailable => "UNAVAILABLE",
            Code::Internal => "INTERNAL",
        }
    }

    /// Returns the HTTP status the API answers the code with (a plain number: this crate
    /// knows no HTTP library).
    pub const fn status(self) -> u16 {
        match self {
            Code::InvalidArgument | Code::EmptyExternalId | Code::MalformedJson => 400,
            Code::Unauthenticated | Code::InvalidSignature => 401,
            Code::Forbidden | Code::TenantMismatch => 403,
            Code::NotFound => 404,
            Code::CdhAlreadyConnected
            | Code::CdhNotConnected
            | Code::UnifyScopeSettingExists
            | Code::OrganizationExists
            | Code::MissingOrganization => 409,
            Code::PayloadTooLarge => 413,
            Code::UnsupportedMediaType => 415,
            Code::Overloaded => 429,
            Code::Unavailable => 503,
            Code::Internal => 500,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an operation was not applied.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The addressed record does not exist (or the caller may not see it).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is malformed for the contract; nothing was written.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request conflicts with the current state (or is refused with a code of its own);
    /// `code` is the API error code, whose status [`Code::status`] gives.
    #[error("{message}")]
    Conflict { code: Code, message: String },
    /// The scope has too much work in flight; retry later.
    #[error("too many operations in flight for this scope")]
    Overloaded,
    /// The actor that owns the data is restarting, failed, or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed; never reported as absence. A store that cannot use its files (a
    /// full disk, an I/O error: [`StoreError::is_unavailable`]) is `UNAVAILABLE`, any other
    /// store failure `INTERNAL`.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

impl OpError {
    pub fn invalid(message: impl Into<String>) -> Self {
        OpError::InvalidArgument(message.into())
    }

    pub fn conflict(code: Code, message: impl Into<String>) -> Self {
        OpError::Conflict {
            code,
            message: message.into(),
        }
    }

    /// Returns the API error code of the error.
    pub fn code(&self) -> Code {
        match self {
            OpError::NotFound(_) => Code::NotFound,
            OpError::InvalidArgument(_) => Code::InvalidArgument,
            OpError::Conflict { code, .. } => *code,
            OpError::Overloaded => Code::Overloaded,
            OpError::Unavailable(_) => Code::Unavailable,
            OpError::Storage(err) if err.is_unavailable() => Code::Unavailable,
            OpError::Storage(_) => Code::Internal,
        }
    }
}

impl From<JsonError> for OpError {
    fn from(err: JsonError) -> Self {
        match err {
            JsonError::Syntax(message) => OpError::conflict(Code::MalformedJson, message),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC 4.2, row by row.
    #[test]
    fn codes_answer_the_statuses_of_the_spec() {
        let table: &[(u16, &[Code])] = &[
            (
                400,
                &[
                    Code::InvalidArgument,
                    Code::EmptyExternalId,
                    Code::MalformedJson,
                ],
            ),
            (401, &[Code::Unauthenticated, Code::InvalidSignature]),
            (403, &[Code::Forbidden, Code::TenantMismatch]),
            (404, &[Code::NotFound]),
            (
                409,
                &[
                    Code::CdhAlreadyConnected,
                    Code::CdhNotConnected,
                    Code::UnifyScopeSettingExists,
                    Code::OrganizationExists,
                    Code::MissingOrganization,
                ],
            ),
            (413, &[Code::PayloadTooLarge]),
            (415, &[Code::UnsupportedMediaType]),
            (429, &[Code::Overloaded]),
            (503, &[Code::Unavailable]),
            (500, &[Code::Internal]),
        ];
        let mut names = std::collections::HashSet::new();
        for (status, codes) in table {
            for code in *codes {
                assert_eq!(code.status(), *status, "{code}");
                assert!(names.insert(code.as_str()), "{code} twice");
            }
        }
        assert_eq!(names.len(), 18);
        assert_eq!(Code::TenantMismatch.as_str(), "TENANT_MISMATCH");
    }

    /// A store that cannot write is the environment's fault: 503, never 500.
    #[test]
    fn storage_faults_are_unavailable_other_store_errors_internal() {
        let full = StoreError::Unavailable {
            cause: std::io::Error::from_raw_os_error(28),
        };
        assert_eq!(OpError::Storage(full).code(), Code::Unavailable);
        let corrupt = StoreError::Corrupt("bad key".into());
        assert_eq!(OpError::Storage(corrupt).code(), Code::Internal);
    }
}
