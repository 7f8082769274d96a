//! Operational endpoints (SPEC 4.3): liveness, readiness, Prometheus metrics; and the
//! middleware that counts and times every request by route and status.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use unify_actors::error::Code;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::AppState;
use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operation", security(),
    responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the store can write and every scope actor is running.
#[utoipa::path(get, path = "/readyz", tag = "operation", security(),
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.runtime.is_ready() {
        return axum::Json(Health { status: "ready" }).into_response();
    }
    let failed = state.runtime.failed_scopes();
    let message = if state.runtime.store().health() == unify_storage::Health::Failed {
        "the store cannot write; it reopens itself once it can".to_owned()
    } else if failed.is_empty() {
        "scope actors are starting".to_owned()
    } else {
        format!("scopes failed: {failed:?}")
    };
    ApiError::coded(Code::Unavailable, message).into_response()
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operation", security(),
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> Response {
    for (scope_id, status) in state.runtime.scope_statuses() {
        let scope = scope_id.to_string();
        metrics::gauge!("unify_scope_in_flight", "scope" => scope.clone())
            .set(status.in_flight.load(Ordering::Relaxed) as f64);
        metrics::gauge!("unify_scope_members", "scope" => scope.clone())
            .set(status.members.load(Ordering::Relaxed) as f64);
        metrics::gauge!("unify_job_done", "scope" => scope.clone())
            .set(status.job_done.load(Ordering::Relaxed) as f64);
        metrics::gauge!("unify_job_total", "scope" => scope.clone())
            .set(status.job_total.load(Ordering::Relaxed) as f64);
        metrics::gauge!("unify_scope_finished", "scope" => scope).set(if status.is_finished() {
            1.0
        } else {
            0.0
        });
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Runs `handle` on the request, counting and timing it by route template, method and status.
pub async fn tracked<F>(request: Request, handle: impl FnOnce(Request) -> F) -> Response
where
    F: std::future::Future<Output = Response>,
{
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Only standard methods become label values: a client inventing methods must not grow
    // the set of series.
    let method = match *request.method() {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS => request.method().as_str().to_owned(),
        _ => "other".to_owned(),
    };
    let started = Instant::now();
    let response = handle(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("unify_http_requests_total", &labels).increment(1);
    metrics::histogram!("unify_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
