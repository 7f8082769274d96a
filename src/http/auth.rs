//! Who is calling (SPEC 4.1): the bearer token's claims, and the access rules on orgs.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use unify_storage::{Id, Org};
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::state::AppState;
use crate::auth::{Claims, Role};
use crate::error::ApiError;

/// The authenticated caller. Any missing, malformed, expired or wrongly signed token is
/// `401 UNAUTHENTICATED`.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)
            .or_else(|| websocket_token(parts))
            .ok_or_else(|| ApiError::unauthenticated("a bearer token is required"))?;
        let claims = state
            .tokens
            .verify(&token)
            .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
        Ok(Caller(claims))
    }
}

fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The websocket (only) also takes the token as `?access_token=`, since browsers cannot set
/// headers on a websocket upgrade.
fn websocket_token(parts: &Parts) -> Option<String> {
    if !parts.uri.path().ends_with("/ws") {
        return None;
    }
    parts.uri.query()?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "access_token").then(|| value.to_owned())
    })
}

impl Caller {
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// Refuses roles other than `roles` with `403 FORBIDDEN`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// Returns the caller's account (admins and agents); other roles are `403`.
    pub fn account(&self) -> Result<Id, ApiError> {
        self.require(&[Role::Admin, Role::Agent])?;
        self.0.account_id.ok_or_else(ApiError::forbidden)
    }

    /// Returns the caller's account if it is an admin; other roles are `403`.
    pub fn admin_account(&self) -> Result<Id, ApiError> {
        self.require(&[Role::Admin])?;
        self.account()
    }

    /// Returns whether the caller may use `org`: admins every org of their account, agents
    /// the orgs of their account listed in `org_ids`.
    pub fn may_use(&self, org: &Org) -> bool {
        let claims = &self.0;
        claims.account_id == Some(org.account_id)
            && match claims.role {
                Role::Admin => true,
                Role::Agent => claims.org_ids.contains(&org.id),
                Role::Root => false,
            }
    }

    /// Returns the org if the caller may use it; an org it may not see is `404`, exactly as
    /// if it did not exist. Roles that never use orgs are `403`.
    pub fn org(&self, state: &AppState, org_id: Id) -> Result<Org, ApiError> {
        self.account()?;
        match state.runtime.org(org_id) {
            Ok(org) if self.may_use(&org) => Ok(org),
            Ok(_) => Err(ApiError::not_found("organization")),
            Err(e) => Err(e.into()),
        }
    }
}

/// Declares the bearer scheme in the OpenAPI document.
#[derive(Debug)]
pub struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
