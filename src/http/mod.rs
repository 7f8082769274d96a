//! The HTTP API (SPEC 4): one file per resource. Handlers authenticate, validate, make one
//! runtime call and map its reply; the business rules live in `unify-actors`. The transport
//! (`serve`: the accept loop, timeouts, connection cap) and its middlewares (`limits`,
//! `body_timeout`) sit in front of them.
//!
//! Dependencies inside `http/` point one way: the resource modules (`accounts`, `admin`,
//! `channels`, `members`, `unification`, `webhooks`, `ws`, `ops`, `console`) may use the leaves `state`,
//! `shapes`, `params`, `extract` and `auth`, and call the runtime through `AppState`; no
//! resource module imports another, and the leaves import no resource module.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod body_timeout;
pub mod channels;
pub mod console;
pub mod extract;
pub mod idle;
pub mod limits;
pub mod members;
pub mod ops;
pub mod params;
pub mod serve;
pub mod shapes;
pub mod state;
pub mod unification;
pub mod webhooks;
pub mod ws;

pub use state::AppState;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use unify_actors::error::Code;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::HttpConfig;
use crate::error::ApiError;
use auth::BearerScheme;

/// Request bodies larger than this are refused with `413 PAYLOAD_TOO_LARGE` (import excepted).
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "unify",
        description = "Self-hosted profile unification engine (SPEC 4)"
    ),
    modifiers(&BearerScheme),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Returns the API's routes and their OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::routes())
        .nest("/api/v1/applications/cdh", admin::routes())
        .nest("/api/v1/application/cdh", admin::routes())
        .nest("/api/v1/orgs/{org_id}", channels::routes())
        .nest("/api/v1/orgs/{org_id}", members::routes())
        .nest("/api/v1/orgs/{org_id}", unification::routes())
        .nest("/api/v1/orgs/{org_id}", webhooks::routes())
        .nest("/api/v1/orgs/{org_id}", ws::routes())
        .merge(ops::routes())
        .split_for_parts()
}

/// Returns the application: every route with its error handling, limits and metrics. The
/// request head limits are checked before the body timeout starts, and both inside the metrics
/// middleware, so that their refusals are counted too.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api();
    let doc = Arc::new(doc);
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .route("/console", axum::routing::get(console::index))
    .route("/console/", axum::routing::get(console::index))
    .route("/console/{*path}", axum::routing::get(console::asset))
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(DefaultBodyLimit::max(BODY_LIMIT))
    .layer(from_fn_with_state(Front::from(&state.config.http), front))
    .with_state(state)
}

/// What [`front`] needs of `[http]`, copied so that a request touches nothing shared.
#[derive(Debug, Clone, Copy)]
struct Front {
    head: limits::HeadLimits,
    body_idle: Duration,
}

impl From<&HttpConfig> for Front {
    fn from(config: &HttpConfig) -> Self {
        Front {
            head: limits::HeadLimits::from(config),
            body_idle: config.body_idle_timeout(),
        }
    }
}

/// Every request's way in, as one layer (each `from_fn` layer costs about 4% of P3's
/// throughput): counted and timed (`ops`), refused if its head is over the limits (`limits`),
/// then handled with its body under the idle timeout (`body_timeout`).
async fn front(State(front): State<Front>, request: Request, next: Next) -> Response {
    ops::tracked(request, |request| async move {
        if let Some(refused) = limits::refusal(&request, &front.head) {
            return refused.into_response();
        }
        body_timeout::with_idle_timeout(request, front.body_idle, |request| next.run(request)).await
    })
    .await
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::InvalidArgument,
        "method not allowed on this route",
    )
}
