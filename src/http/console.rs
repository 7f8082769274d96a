//! The operator console (SPEC 8b): static files embedded in the binary at compile time and
//! served at `/console`. It is plain HTML, CSS and ES modules with no build step (nothing to
//! regenerate, no Node), and it talks to the server only through the public API and the
//! websocket, like any other client.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles and connections
//! from this origin only, no inline script or style, no framing. The token is never part of
//! a console URL's query: `unify token --console` puts it in the fragment, which browsers do
//! not send.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The console's files: path under `/console/`, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../console/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/console.css"),
    ),
    (
        "cytoscape-container.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/cytoscape-container.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/api.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/pages.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/graph.js"),
    ),
    (
        "vendor/cytoscape-3.35.0.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/vendor/cytoscape-3.35.0.min.js"),
    ),
];

/// Same-origin everything; `connect-src 'self'` covers the websocket of the same host.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// `GET /console` and `GET /console/`: the page.
pub async fn index() -> Response {
    file("index.html").unwrap_or_else(|| ApiError::not_found("route").into_response())
}

/// `GET /console/{*path}`: one of the embedded files.
pub async fn asset(Path(path): Path<String>) -> Response {
    file(&path).unwrap_or_else(|| ApiError::not_found("route").into_response())
}

fn file(path: &str) -> Option<Response> {
    let path = if path.is_empty() { "index.html" } else { path };
    let &(_, content_type, bytes) = FILES.iter().find(|(name, _, _)| *name == path)?;
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}
