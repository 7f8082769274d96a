//! Extractors whose rejections answer with the API's error body (SPEC 4.2), never axum's
//! plain-text defaults. Every JSON body is read by [`Json`] through
//! [`unify_actors::json::parse`], which refuses an array (or any non-object) where an object
//! belongs; every query string is checked for invalid UTF-8 by [`Query`] before it is decoded.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use percent_encoding::percent_decode;
use serde::de::DeserializeOwned;
use unify_actors::error::OpError;
use unify_actors::json::{self, JsonError};

use crate::error::ApiError;

/// A JSON body: wrong content type `415`, oversized `413`, syntax `MALFORMED_JSON`, wrong
/// types, unknown fields, out-of-range ids and arrays where an object belongs
/// `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        Ok(Json(json::parse(&bytes)?))
    }
}

/// Refuses a body not declared as JSON (`application/json` or `application/*+json`) with
/// `415`.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let is_json = essence.as_deref().is_some_and(|mime| {
        mime == "application/json"
            || mime
                .strip_prefix("application/")
                .is_some_and(|subtype| subtype.ends_with("+json"))
    });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type("application/json"))
    }
}

/// Maps a failure to read the body: over the limit `413`, anything else `400`.
pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large()
    } else {
        ApiError::invalid(rejection.body_text())
    }
}

impl From<JsonError> for ApiError {
    fn from(err: JsonError) -> Self {
        OpError::from(err).into()
    }
}

/// Path parameters: ids that are not numbers (or out of range) are `INVALID_ARGUMENT`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters: malformed ones, and any that is not UTF-8 once percent-decoded, are
/// `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Some(query) = parts.uri.query() {
            check_utf8(query)?;
        }
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// Refuses a query string whose names or values are not UTF-8 once percent-decoded: the form
/// decoder would replace those bytes with U+FFFD and look up a value nobody sent.
fn check_utf8(query: &str) -> Result<(), ApiError> {
    let valid = query
        .split('&')
        .all(|pair| percent_decode(pair.as_bytes()).decode_utf8().is_ok());
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "the query string is not valid UTF-8 once percent-decoded",
        ))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid(rejection.body_text())
    }
}

/// Deserializes a field that distinguishes "absent" (`None`, via `#[serde(default)]`) from
/// "null" (`Some(None)`), for partial updates.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_must_be_utf8_once_decoded() {
        assert!(check_utf8("external_member_id=%E5%B0%8F&limit=3").is_ok());
        assert!(check_utf8("a=%zz&b=%").is_ok());
        assert!(check_utf8("external_member_id=%FF").is_err());
        assert!(check_utf8("%C3=1").is_err());
    }

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            require_json(&headers).is_ok()
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/json"));
        assert!(!with("application/x-ndjson"));
        assert!(require_json(&HeaderMap::new()).is_err());
    }
}
