//! The request head limits (`http.max_uri_bytes`, `http.max_header_count`,
//! `http.max_header_bytes`), answered with the SPEC 4.2 error body: `414` for a long request
//! target, `431` for too many or too large header fields, both with code `INVALID_ARGUMENT`.
//!
//! hyper refuses oversized heads itself, but with an empty body that cannot be customized, so
//! the transport (`crate::http::serve`) sets hyper's limits above these and this middleware
//! refuses first. Only heads beyond hyper's limits, or truly unparsable, still get hyper's
//! empty-bodied `400`/`414`/`431`.

use axum::extract::Request;
use axum::http::HeaderMap;

use crate::config::HttpConfig;
use crate::error::ApiError;

/// Bytes counted per header field on top of its name and value: `": "` and CRLF.
const FIELD_OVERHEAD: usize = 4;

/// The limits a request head is held to (from `[http]`), copied into the middleware so that
/// checking a request touches nothing shared.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_uri_bytes: usize,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
}

impl From<&HttpConfig> for HeadLimits {
    fn from(config: &HttpConfig) -> Self {
        HeadLimits {
            max_uri_bytes: config.max_uri_bytes,
            max_header_count: config.max_header_count,
            max_header_bytes: config.max_header_bytes,
        }
    }
}

/// Returns why `request`'s head is refused, if it is (checked before any handler runs).
pub fn refusal(request: &Request, limits: &HeadLimits) -> Option<ApiError> {
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
