//! Admin Center endpoints (SPEC 4.6), served under both `/api/v1/applications/cdh` and
//! `/api/v1/application/cdh`. Admin only; they act on the caller's account, whose *account
//! scope* is the scope of its caac org.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use unify_actors::key_change::KeyChange;
use unify_storage::{Id, Org};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::Json;
use super::shapes::{AdminSetting, KeyNames, OrgView, admin_setting, attributes};
use super::state::AppState;
use crate::error::{ApiResult, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(organizations))
        .routes(routes!(get_setting))
        .routes(routes!(replace_keys))
        .routes(routes!(merge_state))
        .routes(routes!(integrate))
        .routes(routes!(disconnect))
        .routes(routes!(sync_state))
        .routes(routes!(sync_retry))
}

/// Returns the caller's (admin) account and its caac org, whose scope is the account scope.
fn account_scope(state: &AppState, caller: &Caller) -> ApiResult<(Id, Org)> {
    let account_id = caller.admin_account()?;
    Ok((account_id, state.runtime.account_caac_org(account_id)?))
}

/// The account's organizations.
#[utoipa::path(get, path = "/organizations", tag = "admin",
    responses((status = 200, body = [OrgView]), (status = "4XX", body = ErrorBody)))]
async fn organizations(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<OrgView>>> {
    let account_id = caller.admin_account()?;
    let orgs = state.runtime.orgs_of_account(account_id)?;
    Ok(axum::Json(orgs.into_iter().map(OrgView::from).collect()))
}

/// The account scope's setting.
#[utoipa::path(get, path = "/unify-scope-setting", tag = "admin",
    responses((status = 200, body = AdminSetting), (status = "4XX", body = ErrorBody)))]
async fn get_setting(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<AdminSetting>> {
    let (_, caac) = account_scope(&state, &caller)?;
    let record = state.runtime.setting(caac.id).await?;
    Ok(axum::Json(admin_setting(&state, record)?))
}

/// Replaces the account scope's keys (allowed while connected).
#[utoipa::path(put, path = "/unify-scope-setting/unify-keys", tag = "admin",
    request_body = KeyNames,
    responses((status = 200, body = AdminSetting), (status = "4XX", body = ErrorBody)))]
async fn replace_keys(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<KeyNames>,
) -> ApiResult<axum::Json<AdminSetting>> {
    let (_, caac) = account_scope(&state, &caller)?;
    let change = KeyChange::Replace {
        attributes: attributes(&body.unify_keys),
        allow_connected: true,
    };
    let record = state.runtime.change_keys(caac.id, change).await?;
    Ok(axum::Json(admin_setting(&state, record)?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScopeMergeState {
    pub unify_scope_id: Id,
    pub is_finished: bool,
}

/// Whether the account scope's unification work is finished.
#[utoipa::path(get, path = "/unify-scope-setting/merge-state", tag = "admin",
    responses((status = 200, body = ScopeMergeState), (status = "4XX", body = ErrorBody)))]
async fn merge_state(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<ScopeMergeState>> {
    let (_, caac) = account_scope(&state, &caller)?;
    Ok(axum::Json(ScopeMergeState {
        unify_scope_id: state.runtime.scope_of(caac.id)?,
        is_finished: state.runtime.scope_merge_state(caac.id)?,
    }))
}

/// Joins the account's caac and maac orgs into one scope with these keys.
#[utoipa::path(post, path = "/integrate", tag = "admin", request_body = KeyNames,
    responses((status = 200, body = AdminSetting), (status = "4XX", body = ErrorBody)))]
async fn integrate(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<KeyNames>,
) -> ApiResult<axum::Json<AdminSetting>> {
    let (account_id, _) = account_scope(&state, &caller)?;
    let keys = KeyChange::Replace {
        attributes: attributes(&body.unify_keys),
        allow_connected: true,
    };
    let record = state.runtime.integrate(account_id, keys).await?;
    Ok(axum::Json(admin_setting(&state, record)?))
}

/// Splits the account scope: each org returns to a scope of its own.
#[utoipa::path(post, path = "/disconnect", tag = "admin",
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
async fn disconnect(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    let account_id = caller.admin_account()?;
    state.runtime.disconnect(account_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The CDH delivery state of the account scope (SPEC 7).
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStateView {
    /// Events waiting in the outbox.
    pub pending: u64,
    /// Events delivered so far.
    pub delivered: u64,
    /// Dead-lettered events (permanent rejections), requeued by `POST sync/retry`.
    pub dead: u64,
    pub last_error: Option<String>,
    pub last_delivered_at: Option<String>,
}

/// The account scope's CDH delivery state.
#[utoipa::path(get, path = "/sync-state", tag = "admin",
    responses((status = 200, body = SyncStateView), (status = "4XX", body = ErrorBody)))]
async fn sync_state(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<SyncStateView>> {
    let account_id = caller.admin_account()?;
    let s = state.runtime.sync_state(account_id).await?;
    Ok(axum::Json(SyncStateView {
        pending: s.pending,
        delivered: s.delivered,
        dead: s.dead,
        last_error: s.last_error,
        last_delivered_at: s.last_delivered_at,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Requeued {
    pub requeued: u64,
}

/// Requeues the dead-lettered deliveries of the account scope.
#[utoipa::path(post, path = "/sync/retry", tag = "admin",
    responses((status = 200, body = Requeued), (status = "4XX", body = ErrorBody)))]
async fn sync_retry(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Requeued>> {
    let account_id = caller.admin_account()?;
    let requeued = state.runtime.sync_retry(account_id).await?;
    Ok(axum::Json(Requeued { requeued }))
}
