//! Deployment and account endpoints (SPEC 4.3): accounts, organizations, platform tokens.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use unify_actors::json::{self, ApiId};
use unify_storage::{Account, Id};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::Json;
use super::shapes::{OrgView, SourceName};
use super::state::AppState;
use crate::auth::Role;
use crate::error::{ApiError, ApiResult, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account))
        .routes(routes!(create_organization))
        .routes(routes!(platform_token))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Not empty nor only whitespace.
    #[schema(pattern = r"\S")]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: Id,
    pub name: String,
    pub uuid: String,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        AccountView {
            id: a.id,
            name: a.name,
            uuid: a.uuid,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    pub source: SourceName,
    /// Not empty nor only whitespace.
    #[schema(pattern = r"\S")]
    pub name: String,
    #[serde(default)]
    pub uuid: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformTokenRequest {
    #[serde(deserialize_with = "json::id")]
    #[schema(value_type = ApiId)]
    pub org_id: Id,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlatformToken {
    pub org_id: Id,
    /// A JWT for the platform (`aud` `platform`).
    pub token: String,
}

/// Creates an account (root only).
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts",
    request_body = CreateAccount,
    responses((status = 201, body = AccountView), (status = "4XX", body = ErrorBody)))]
async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateAccount>,
) -> ApiResult<(StatusCode, axum::Json<AccountView>)> {
    caller.require(&[Role::Root])?;
    let account = state.runtime.create_account(&body.name).await?;
    Ok((StatusCode::CREATED, axum::Json(account.into())))
}

/// Creates an organization of the caller's account (admin only).
#[utoipa::path(post, path = "/api/v1/applications/organizations", tag = "accounts",
    request_body = CreateOrganization,
    responses((status = 201, body = OrgView), (status = "4XX", body = ErrorBody)))]
async fn create_organization(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateOrganization>,
) -> ApiResult<(StatusCode, axum::Json<OrgView>)> {
    let account_id = caller.admin_account()?;
    let org = state
        .runtime
        .create_org(account_id, body.source.into(), &body.name, body.uuid)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(org.into())))
}

/// Issues a short-lived platform token for one org (admin, agent).
#[utoipa::path(post, path = "/api/v1/platform/token", tag = "accounts",
    request_body = PlatformTokenRequest,
    responses((status = 200, body = PlatformToken), (status = "4XX", body = ErrorBody)))]
async fn platform_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PlatformTokenRequest>,
) -> ApiResult<axum::Json<PlatformToken>> {
    let org = caller.org(&state, body.org_id)?;
    let token = state
        .tokens
        .issue_platform(
            &caller.0.sub,
            org.account_id,
            org.id,
            state.config.auth.platform_token_ttl_s,
        )
        .map_err(ApiError::internal)?;
    Ok(axum::Json(PlatformToken {
        org_id: org.id,
        token,
    }))
}
