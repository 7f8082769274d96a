//! The one API error type: every error answer of the HTTP layer, with the body and codes of
//! SPEC 4.2. Details of 5xx errors are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use unify_actors::error::{Code, OpError};

/// Seconds a client is asked to wait after `OVERLOADED` or `UNAVAILABLE`.
const RETRY_AFTER_S: &str = "1";

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The error body `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// One of the codes of SPEC 4.2.
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// An error answered with another status than its code's: the protocol-level refusals
    /// (405, 408, 414, 431) that SPEC 4.2 gives no code of their own.
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.as_str(),
            message: message.into(),
        }
    }

    /// An error with a code of the one table ([`Code`]), answered with the code's status.
    pub fn coded(code: Code, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, code, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::coded(Code::InvalidArgument, message)
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::coded(Code::MalformedJson, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::coded(Code::Unauthenticated, message)
    }

    pub fn forbidden() -> Self {
        Self::coded(Code::Forbidden, "this role may not call this endpoint")
    }

    pub fn not_found(what: &str) -> Self {
        Self::coded(Code::NotFound, format!("{what} not found"))
    }

    pub fn too_large() -> Self {
        Self::coded(
            Code::PayloadTooLarge,
            "the request body is larger than 1 MiB",
        )
    }

    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::coded(
            Code::UnsupportedMediaType,
            format!("the request body must be {expected}"),
        )
    }

    /// A request target longer than `http.max_uri_bytes`. SPEC 4.2 has no code of its own for
    /// it: the client sent an invalid request, so `INVALID_ARGUMENT`.
    pub fn uri_too_long(limit: usize) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            Code::InvalidArgument,
            format!("the request target is longer than {limit} bytes"),
        )
    }

    /// A request head over `http.max_header_count` fields or `http.max_header_bytes` bytes.
    pub fn headers_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Code::InvalidArgument,
            message,
        )
    }

    /// A request body that stopped arriving for `http.body_idle_timeout_ms`.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            Code::InvalidArgument,
            "the request body was not received in time",
        )
    }

    /// A store that cannot use its files (a full disk, an I/O error): not a bug and not the
    /// client's fault, so `503 UNAVAILABLE` with `Retry-After`; the log names the cause (`No
    /// space left on device`), the answer does not.
    pub fn store_unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "the store cannot write");
        Self::coded(
            Code::Unavailable,
            "the store cannot write at the moment; retry later",
        )
    }

    /// An internal failure: logged with its detail, answered without it.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::coded(Code::Internal, "internal error")
    }
}

impl From<OpError> for ApiError {
    fn from(err: OpError) -> Self {
        match err {
            OpError::NotFound(what) => ApiError::not_found(what),
            OpError::InvalidArgument(message) => ApiError::invalid(message),
            OpError::Conflict { code, message } => ApiError::coded(code, message),
            OpError::Overloaded => ApiError::coded(
                Code::Overloaded,
                "too many operations in flight; retry later",
            ),
            OpError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "unavailable");
                ApiError::coded(
                    Code::Unavailable,
                    "the service is temporarily unavailable; retry later",
                )
            }
            OpError::Storage(err) if err.is_unavailable() => ApiError::store_unavailable(err),
            OpError::Storage(err) => ApiError::internal(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        }
        response
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
