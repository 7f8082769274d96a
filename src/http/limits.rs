//! The request head limits (`http.max_uri_bytes`, `http.max_header_count`,
//! `http.max_header_bytes`), answered with the SPEC 4.2 error body: `414` for a long request
//! target, `431` for too many or too large header fields, both with code `INVALID_ARGUMENT`.
//!
//! hyper refuses oversized heads itself, but with an empty body that cannot be customized, so
//! the transport (`crate::http::serve`) sets hyper's limits above these and this middleware
//! refuses first. Only heads beyond hyper's limits, or truly unparsable, still get hyper's
//! empty-bodied `400`/`414`/`431`.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::config::HttpConfig;
use crate::error::ApiError;

/// Bytes counted per header field on top of its name and value: `": "` and CRLF.
const FIELD_OVERHEAD: usize = 4;

/// Refuses a request whose head is over the configured limits, before any handler runs.
pub async fn check_head(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match refusal(&request, &state.config.http) {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

/// Returns why `request`'s head is refused, if it is.
fn refusal(request: &Request, limits: &HttpConfig) -> Option<ApiError> {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, str::len);
    if target > limits.max_uri_bytes {
        return Some(ApiError::uri_too_long(limits.max_uri_bytes));
    }
    let headers = request.headers();
    if headers.len() > limits.max_header_count {
        return Some(ApiError::headers_too_large(format!(
            "the request has more than {} header fields",
            limits.max_header_count
        )));
    }
    if header_bytes(headers) > limits.max_header_bytes {
        return Some(ApiError::headers_too_large(format!(
            "the request's header fields are larger than {} bytes",
            limits.max_header_bytes
        )));
    }
    None
}

/// The size of the header fields as sent: names, values and the separators of each field.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + FIELD_OVERHEAD)
        .sum()
}
