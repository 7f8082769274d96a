//! The request body idle timeout (`http.body_idle_timeout_ms`). hyper only times the request
//! head; a client that stops sending in the middle of a body (fewer bytes than its
//! `Content-Length`, or a chunked body that never ends) would otherwise hold its handler and
//! its connection forever.
//!
//! The middleware wraps the request body: when a handler waits for the next piece of the body
//! longer than the timeout, the body ends with an error, and whatever the handler made of that
//! error the client is answered `408` with code `INVALID_ARGUMENT` (SPEC 4.2 has no code of its
//! own for it) and `Connection: close`. Only waiting counts: a body that keeps arriving (a
//! streamed import) may take as long as it needs, and time a handler spends between reads (an
//! fsync of the import spool) is not charged to the client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use super::idle::{IdleDeadline, IdlePoll};
use crate::error::ApiError;

/// Runs `handle` on the request with its body under the idle timeout; answers `408` (and
/// closes the connection) when the body stopped arriving.
pub async fn with_idle_timeout<F>(
    request: Request,
    timeout: Duration,
    handle: impl FnOnce(Request) -> F,
) -> Response
where
    F: Future<Output = Response>,
{
    // Requests without a body (most reads, websocket upgrades) need no timer.
    if request.body().is_end_stream() {
        return handle(request).await;
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| Body::new(IdleBody::new(body, timeout, timed_out.clone())));
    let response = handle(request).await;
    if !timed_out.load(Ordering::Acquire) {
        return response;
    }
    tracing::debug!(
        timeout_ms = timeout.as_millis() as u64,
        "request body timed out"
    );
    let mut response = ApiError::body_timeout().into_response();
    // The rest of the body may still come, or never: the connection cannot be reused.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The error a body ends with when it stopped arriving.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
struct BodyTimedOut;

/// A request body that fails when the wait for its next frame exceeds `timeout`.
struct IdleBody {
    inner: Body,
    /// Armed while the reader waits for a frame; re-armed after each frame.
    deadline: IdleDeadline,
    /// Set when the body timed out, for the middleware to answer `408`.
    timed_out: Arc<AtomicBool>,
}

impl IdleBody {
    fn new(inner: Body, timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        IdleBody {
            inner,
            deadline: IdleDeadline::new(timeout),
            timed_out,
        }
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match this.deadline.track(cx, frame) {
            IdlePoll::Ready(frame) => Poll::Ready(frame),
            IdlePoll::Pending => Poll::Pending,
            IdlePoll::Expired => {
                this.timed_out.store(true, Ordering::Release);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
