//! Channel endpoints (SPEC 4.4): create, list, read and update an org's channels. The webhook
//! secret is shown only by creation; the contact-API token never.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use unify_actors::directory::ChannelPatch;
use unify_actors::runtime::{CHANNEL_TYPES, NewChannel};
use unify_storage::{Channel, ContactApi, Id};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::{Json, Path, double_option};
use super::params::{ChannelPath, OrgPath, string_enum};
use super::state::AppState;
use crate::error::{ApiResult, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(get_channel, update_channel))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactApiInput {
    /// Base URL, http or https with a host; unify calls `GET {url}/users/{external_member_id}`
    /// and `GET {url}/tenant`.
    #[schema(
        pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://([a-z0-9-]+\.)*[a-z][a-z0-9-]*(:[0-9]{1,4})?(/[A-Za-z0-9._~/-]*)?$"
    )]
    pub url: String,
    /// Bearer token sent to the contact API; never returned. Not empty.
    #[schema(pattern = r"\S")]
    pub token: String,
}

impl From<ContactApiInput> for ContactApi {
    fn from(c: ContactApiInput) -> Self {
        ContactApi {
            url: c.url,
            token: c.token,
        }
    }
}

/// Documents `type` as the enum of the channel types the runtime accepts.
fn channel_type_schema() -> utoipa::openapi::schema::Object {
    string_enum(CHANNEL_TYPES.iter().copied(), None)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// Not empty nor only whitespace.
    #[schema(pattern = r"\S")]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(schema_with = channel_type_schema)]
    pub channel_type: String,
    /// Not empty; needed with `auto_provision` unless the contact API tells it.
    #[serde(default)]
    #[schema(pattern = r"\S")]
    pub tenant_key: Option<String>,
    #[serde(default)]
    pub auto_provision: Option<bool>,
    #[serde(default)]
    pub contact_api: Option<ContactApiInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannel {
    /// Not empty nor only whitespace.
    #[serde(default)]
    #[schema(pattern = r"\S")]
    pub name: Option<String>,
    /// `null` clears the tenant key; otherwise not empty.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = r"\S")]
    pub tenant_key: Option<Option<String>>,
    #[serde(default)]
    pub auto_provision: Option<bool>,
    /// `null` removes the contact API.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<ContactApiInput>)]
    pub contact_api: Option<Option<ContactApiInput>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactApiView {
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub id: Id,
    pub org_id: Id,
    pub name: String,
    #[serde(rename = "type")]
    pub channel_type: String,
    pub tenant_key: Option<String>,
    pub auto_provision: bool,
    pub contact_api: Option<ContactApiView>,
    /// The webhook's HMAC secret: only in the answer to the channel's creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

impl ChannelView {
    fn new(c: Channel, with_secret: bool) -> Self {
        ChannelView {
            id: c.id,
            org_id: c.org_id,
            name: c.name,
            channel_type: c.channel_type,
            tenant_key: c.tenant_key,
            auto_provision: c.auto_provision,
            contact_api: c.contact_api.map(|a| ContactApiView { url: a.url }),
            webhook_secret: with_secret.then_some(c.webhook_secret),
        }
    }
}

/// Creates a channel of a caac org; the answer carries the webhook secret, once.
#[utoipa::path(post, path = "/channels", tag = "channels",
    params(OrgPath), request_body = CreateChannel,
    responses((status = 201, body = ChannelView), (status = "4XX", body = ErrorBody)))]
async fn create_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
    Json(body): Json<CreateChannel>,
) -> ApiResult<(StatusCode, axum::Json<ChannelView>)> {
    let org = caller.org(&state, p.org_id)?;
    let new = NewChannel {
        name: body.name,
        channel_type: body.channel_type,
        tenant_key: body.tenant_key,
        auto_provision: body.auto_provision.unwrap_or(false),
        contact_api: body.contact_api.map(ContactApi::from),
    };
    let channel = state.runtime.create_channel(org.id, new).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ChannelView::new(channel, true)),
    ))
}

/// The org's channels.
#[utoipa::path(get, path = "/channels", tag = "channels", params(OrgPath),
    responses((status = 200, body = [ChannelView]), (status = "4XX", body = ErrorBody)))]
async fn list_channels(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
) -> ApiResult<axum::Json<Vec<ChannelView>>> {
    let org = caller.org(&state, p.org_id)?;
    let channels = state.runtime.channels(org.id)?;
    Ok(axum::Json(
        channels
            .into_iter()
            .map(|c| ChannelView::new(c, false))
            .collect(),
    ))
}

/// One channel.
#[utoipa::path(get, path = "/channels/{channel_id}", tag = "channels",
    params(ChannelPath),
    responses((status = 200, body = ChannelView), (status = "4XX", body = ErrorBody)))]
async fn get_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<ChannelPath>,
) -> ApiResult<axum::Json<ChannelView>> {
    let org = caller.org(&state, p.org_id)?;
    let channel = state.runtime.channel(org.id, p.channel_id)?;
    Ok(axum::Json(ChannelView::new(channel, false)))
}

/// Updates a channel's settings.
#[utoipa::path(patch, path = "/channels/{channel_id}", tag = "channels",
    params(ChannelPath), request_body = UpdateChannel,
    responses((status = 200, body = ChannelView), (status = "4XX", body = ErrorBody)))]
async fn update_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<ChannelPath>,
    Json(body): Json<UpdateChannel>,
) -> ApiResult<axum::Json<ChannelView>> {
    let org = caller.org(&state, p.org_id)?;
    let patch = ChannelPatch {
        name: body.name,
        tenant_key: body.tenant_key,
        auto_provision: body.auto_provision,
        contact_api: body.contact_api.map(|c| c.map(ContactApi::from)),
    };
    let channel = state
        .runtime
        .update_channel(org.id, p.channel_id, patch)
        .await?;
    Ok(axum::Json(ChannelView::new(channel, false)))
}
