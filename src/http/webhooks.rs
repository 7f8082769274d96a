//! Channel webhooks (SPEC 6): `POST /channels/:channel_id/events`, authenticated by the
//! channel's webhook secret instead of a bearer token, and the link codes a sender redeems
//! through them. The handlers check the signature and hand the event to the runtime, whose
//! answer (accepted or duplicate) is synchronous; provisioning continues in the background.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use unify_actors::clock::rfc3339;
use unify_actors::error::Code;
use unify_actors::provision::{Acceptance, ChannelEvent};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::{Path, body_rejection, require_json};
use super::params::{ChannelPath, MemberPath};
use super::state::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// Header carrying `sha256=<hex HMAC-SHA256 of the raw body>` keyed by the webhook secret.
pub const SIGNATURE_HEADER: &str = "x-unify-signature";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive_event))
        .routes(routes!(create_link_code))
}

/// The answer to a delivered event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventStatus {
    /// `accepted` (202) or `duplicate` (200).
    pub status: &'static str,
}

/// A link code: a `link` event (text `CODE`) or a `/link CODE` message redeems it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkCodeView {
    pub code: String,
    /// RFC 3339; ten minutes after creation.
    pub expires_at: String,
}

/// Receives a channel event. Checks, in order and before any write: the signature, the body,
/// a duplicate event id (200), the tenant (403), the sender's identity (400); then 202.
#[utoipa::path(post, path = "/channels/{channel_id}/events", tag = "webhooks",
    params(ChannelPath,
        ("X-Unify-Signature" = String, Header,
            description = "sha256=<hex HMAC-SHA256 of the raw body, keyed by the webhook secret>")),
    request_body = ChannelEvent,
    security(()),
    responses((status = 202, body = EventStatus), (status = 200, body = EventStatus),
        (status = "4XX", body = ErrorBody)))]
async fn receive_event(
    State(state): State<AppState>,
    Path(p): Path<ChannelPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, axum::Json<EventStatus>)> {
    let body = body.map_err(body_rejection)?;
    let channel = state.runtime.channel(p.org_id, p.channel_id)?;
    verify_signature(&headers, channel.webhook_secret.as_bytes(), &body)?;
    require_json(&headers)?;
    let event = ChannelEvent::parse(&body)?;
    let acceptance = state.runtime.accept_event(&channel, event).await?;
    Ok(match acceptance {
        Acceptance::Accepted => (
            StatusCode::ACCEPTED,
            axum::Json(EventStatus { status: "accepted" }),
        ),
        Acceptance::Duplicate => (
            StatusCode::OK,
            axum::Json(EventStatus {
                status: "duplicate",
            }),
        ),
    })
}

/// Creates a single-use link code for a member, valid for ten minutes. A channel sender who
/// sends it (a `link` event, or a `/link CODE` message) joins the member's profile.
#[utoipa::path(post, path = "/chat/members/{member_id}/link-codes", tag = "webhooks",
    params(MemberPath),
    responses((status = 201, body = LinkCodeView), (status = "4XX", body = ErrorBody)))]
async fn create_link_code(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
) -> ApiResult<(StatusCode, axum::Json<LinkCodeView>)> {
    let org = caller.org(&state, p.org_id)?;
    let code = state.runtime.create_link_code(org.id, p.member_id).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(LinkCodeView {
            code: code.code,
            expires_at: rfc3339(code.expires_at),
        }),
    ))
}

/// Checks `X-Unify-Signature` against the HMAC-SHA256 of the raw body, in constant time.
fn verify_signature(headers: &HeaderMap, secret: &[u8], body: &[u8]) -> Result<(), ApiError> {
    let invalid = |message: &str| ApiError::coded(Code::InvalidSignature, message);
    let value = headers
        .get(SIGNATURE_HEADER)
        .ok_or_else(|| invalid("the X-Unify-Signature header is required"))?;
    let signature = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("sha256="))
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or_else(|| invalid("X-Unify-Signature must be sha256=<hex digest>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| invalid("the signature does not match the body"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &str, body: &str) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let digest = hex::encode(mac.finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            format!("sha256={digest}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn signatures_are_checked_against_the_raw_body() {
        let headers = signed("s3cret", r#"{"a":1}"#);
        assert!(verify_signature(&headers, b"s3cret", br#"{"a":1}"#).is_ok());
        let refused = [
            verify_signature(&headers, b"other", br#"{"a":1}"#),
            verify_signature(&headers, b"s3cret", br#"{"a": 1}"#),
            verify_signature(&HeaderMap::new(), b"s3cret", b"{}"),
        ];
        for result in refused {
            let err = result.unwrap_err();
            assert_eq!(
                (err.status, err.code),
                (StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE")
            );
        }
        let mut bad = HeaderMap::new();
        bad.insert(SIGNATURE_HEADER, "sha1=abcd".parse().unwrap());
        assert!(verify_signature(&bad, b"s3cret", b"{}").is_err());
        bad.insert(SIGNATURE_HEADER, "sha256=zz".parse().unwrap());
        assert!(verify_signature(&bad, b"s3cret", b"{}").is_err());
    }
}
