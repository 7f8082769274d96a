//! Member endpoints (SPEC 4.4): create (idempotent), list, read, update, delete, and the NDJSON
//! bulk import with its job resource.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use unify_actors::input::{MemberInput, parse_last_message_at};
use unify_actors::json::{self, ApiId};
use unify_actors::ops::{MemberOp, MemberPatch};
use unify_storage::{Id, ImportJob};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::{Json, Path, Query, double_option};
use super::params::{AttributeName, JobPath, MemberPath, OrgPath};
use super::shapes::{MemberView, apply_member_op};
use super::state::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// Largest page of `GET /chat/members`.
const MAX_LIMIT: usize = 1000;
/// Page size when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members, create_member))
        .routes(routes!(get_member, update_member, delete_member))
        .routes(routes!(import_members))
        .routes(routes!(import_status))
}

/// Creates a member, or answers 200 with the existing member of the same identity.
#[utoipa::path(post, path = "/chat/members", tag = "members",
    params(OrgPath), request_body = MemberInput,
    responses((status = 201, body = MemberView), (status = 200, body = MemberView),
        (status = "4XX", body = ErrorBody)))]
async fn create_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
    Json(body): Json<MemberInput>,
) -> ApiResult<(StatusCode, axum::Json<MemberView>)> {
    let org = caller.org(&state, p.org_id)?;
    let new = body.into_new_member()?;
    let (member, created) = state.runtime.create_member(org.id, new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(member.into())))
}

/// The query of `GET /chat/members`; any other parameter is `INVALID_ARGUMENT`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// With `external_member_id`: the identity's channel (caac orgs).
    #[serde(default, deserialize_with = "json::optional_id")]
    #[param(value_type = Option<ApiId>)]
    channel_id: Option<Id>,
    /// Finds the member of this identity.
    external_member_id: Option<String>,
    /// Lists members with larger ids (`next_after` of the previous page).
    #[serde(default, deserialize_with = "json::optional_id")]
    #[param(value_type = Option<ApiId>)]
    after: Option<Id>,
    /// Page size, 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// With `value`: finds the members holding the key node `(attribute, normalize(value))`
    /// (SPEC 2.1); not combined with `channel_id` or `external_member_id`.
    #[param(value_type = Option<AttributeName>)]
    attribute: Option<AttributeName>,
    /// With `attribute`: the key value as written (`0912 345 678` finds `+886912345678`); a
    /// value that does not link finds nothing.
    value: Option<String>,
}

impl ListQuery {
    /// Returns the key node asked for, if any, refusing a half or mixed query.
    fn key(&mut self) -> ApiResult<Option<(AttributeName, String)>> {
        match (self.attribute.take(), self.value.take()) {
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) => {
                Err(ApiError::invalid("attribute and value are given together"))
            }
            (Some(_), Some(_))
                if self.channel_id.is_some() || self.external_member_id.is_some() =>
            {
                Err(ApiError::invalid(
                    "attribute and value do not combine with channel_id or external_member_id",
                ))
            }
            (Some(attribute), Some(value)) => Ok(Some((attribute, value))),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPage {
    pub members: Vec<MemberView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<Id>,
}

/// Lists the org's members by ascending id, finds one by identity, or finds those holding a
/// key value.
#[utoipa::path(get, path = "/chat/members", tag = "members",
    params(OrgPath, ListQuery),
    responses((status = 200, body = MemberPage), (status = "4XX", body = ErrorBody)))]
async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
    Query(mut q): Query<ListQuery>,
) -> ApiResult<axum::Json<MemberPage>> {
    let org = caller.org(&state, p.org_id)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let after = q.after.unwrap_or(0);
    let page = match q.key()? {
        Some((attribute, value)) => {
            state
                .runtime
                .find_by_key(org.id, attribute.0, value, after, limit)
                .await?
        }
        None => {
            state
                .runtime
                .find_members(
                    org.id,
                    q.channel_id,
                    q.external_member_id.as_deref(),
                    after,
                    limit,
                )
                .await?
        }
    };
    let next_after = (page.len() == limit)
        .then(|| page.last().map(|m| m.id))
        .flatten();
    Ok(axum::Json(MemberPage {
        members: page.into_iter().map(MemberView::from).collect(),
        next_after,
    }))
}

/// One member.
#[utoipa::path(get, path = "/chat/members/{member_id}", tag = "members",
    params(MemberPath),
    responses((status = 200, body = MemberView), (status = "4XX", body = ErrorBody)))]
async fn get_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
) -> ApiResult<axum::Json<MemberView>> {
    let org = caller.org(&state, p.org_id)?;
    let member = state.runtime.get_member(org.id, p.member_id).await?;
    Ok(axum::Json(member.into()))
}

/// A partial update: an absent field is left alone, `null` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub display_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub display_mobile: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub custom_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub line_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub connect_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub original_name: Option<Option<String>>,
    /// RFC 3339 timestamp, or null.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_message_at: Option<Option<String>>,
    /// `false` releases the operator's lock on the member's unification.
    #[serde(default)]
    pub manual_unification: Option<bool>,
}

impl UpdateMember {
    fn into_patch(self) -> ApiResult<MemberPatch> {
        let last_message_at = match self.last_message_at {
            None => None,
            Some(None) => Some(None),
            Some(Some(text)) => Some(Some(parse_last_message_at(&text)?)),
        };
        Ok(MemberPatch {
            display_name: self.display_name,
            display_email: self.display_email,
            display_mobile: self.display_mobile,
            custom_id: self.custom_id,
            line_id: self.line_id,
            connect_id: self.connect_id,
            original_name: self.original_name,
            last_message_at,
            manual_unification: self.manual_unification,
        })
    }
}

/// Updates a member; a changed unify-key attribute is re-unified before the answer.
#[utoipa::path(patch, path = "/chat/members/{member_id}", tag = "members",
    params(MemberPath), request_body = UpdateMember,
    responses((status = 200, body = MemberView), (status = "4XX", body = ErrorBody)))]
async fn update_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
    Json(body): Json<UpdateMember>,
) -> ApiResult<axum::Json<MemberView>> {
    let org = caller.org(&state, p.org_id)?;
    let op = MemberOp::Patch(body.into_patch()?);
    apply_member_op(&state, org.id, p.member_id, op).await
}

/// Erases a member and recomputes its clusters.
#[utoipa::path(delete, path = "/chat/members/{member_id}", tag = "members",
    params(MemberPath),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
async fn delete_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
) -> ApiResult<StatusCode> {
    let org = caller.org(&state, p.org_id)?;
    state
        .runtime
        .member_op(org.id, p.member_id, MemberOp::Delete)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportAccepted {
    pub job_id: Id,
}

/// Starts a bulk import: the NDJSON body (one member object per line, unlimited size) is
/// streamed to disk, then applied in the background.
#[utoipa::path(post, path = "/chat/members/import", tag = "members",
    params(OrgPath),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "NDJSON, unlimited size: one `MemberInput` object (the body of POST /chat/members) per line; each refused line is reported in the job's `errors`"),
    responses((status = 202, body = ImportAccepted), (status = "4XX", body = ErrorBody)))]
async fn import_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, axum::Json<ImportAccepted>)> {
    let org = caller.org(&state, p.org_id)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some("application/x-ndjson") {
        return Err(ApiError::unsupported_media_type("application/x-ndjson"));
    }
    let job_id = state
        .runtime
        .start_import(org.id, body.into_data_stream())
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(ImportAccepted { job_id })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportLineErrorView {
    pub line: u64,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportJobView {
    pub job_id: Id,
    /// `running`, `finished` or `failed`.
    pub status: String,
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    /// The first 100 refused lines.
    pub errors: Vec<ImportLineErrorView>,
}

impl From<ImportJob> for ImportJobView {
    fn from(j: ImportJob) -> Self {
        ImportJobView {
            job_id: j.id,
            status: j.status.as_str().to_owned(),
            total: j.total,
            done: j.done,
            failed: j.failed,
            errors: j
                .errors
                .into_iter()
                .map(|e| ImportLineErrorView {
                    line: e.line,
                    code: e.code,
                    message: e.message,
                })
                .collect(),
        }
    }
}

/// An import job's progress.
#[utoipa::path(get, path = "/imports/{job_id}", tag = "members",
    params(JobPath),
    responses((status = 200, body = ImportJobView), (status = "4XX", body = ErrorBody)))]
async fn import_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<JobPath>,
) -> ApiResult<axum::Json<ImportJobView>> {
    let org = caller.org(&state, p.org_id)?;
    let job = state.runtime.import_status(org.id, p.job_id)?;
    Ok(axum::Json(job.into()))
}
