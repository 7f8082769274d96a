//! The HTTP/1.1 transport in front of the router, in place of `axum::serve`, for what that does
//! not do:
//! - a deadline for every request head (`http.header_read_timeout_ms`): a connection that does
//!   not send its request line and headers in time, or that stays idle that long between
//!   keep-alive requests, is closed (hyper's `header_read_timeout`). Upgraded websockets are no
//!   longer read by hyper and are not affected;
//! - a deadline for every write the client does not take (`http.write_idle_timeout_ms`): a
//!   client that stops reading a response (or its websocket) loses its connection and slot;
//! - a cap on the connections served at once (`http.max_connections`, websockets included: a
//!   connection's slot is held by its socket, so it follows the socket into the upgrade);
//! - hyper's own head limits set above the API's (`crate::http::limits`), so that those are the
//!   ones that answer, with the error body.
//!
//! At the cap the loop stops accepting until a connection closes. New clients wait in the
//! kernel's listen backlog rather than each costing a file descriptor and a task (the resources
//! the cap protects), and since a connection that sends no request is closed within the header
//! timeout, idle sockets free their slots within that time. Accepting to answer `503` would need
//! exactly such a socket for every refused client, at the moment there are too many.
//!
//! Graceful shutdown is `axum::serve`'s: stop accepting, ask every connection to finish its
//! in-flight request and close, and wait for them, at most `HttpConfig::shutdown_grace` (the
//! longest idle timeout: every stalled connection ends within it); websockets are closed by
//! the server's `closing` signal (`http::ws`), not waited for here.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::idle::{IdleDeadline, IdlePoll};
use crate::config::HttpConfig;

/// hyper's head limits are this many times the API's, so that the API's answer first (with the
/// error body) and hyper's only bound what is parsed at all.
const HYPER_LIMIT_FACTOR: usize = 2;

/// hyper's default read buffer limit (`8192 + 4096 * 100`), kept unless the head limit needs
/// more.
const HYPER_DEFAULT_BUF: usize = 8192 + 4096 * 100;

/// The smallest head hyper is set to parse (its own minimum buffer size).
const HYPER_MIN_HEAD: usize = 8192;

/// How long accepting pauses after an error other than a failed connection (such as running
/// out of file descriptors), as `axum::serve` does.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How often reaching the connection cap is logged at most.
const CAP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully and returns
/// once every connection has finished.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let builder = builder(config);
    let max_connections = config.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    // Connections watch `stop` to begin their graceful shutdown; each holds a clone of
    // `running` until it ends, so that its sender sees when they all have.
    let (stop, stopped) = watch::channel(false);
    let (running, running_rx) = watch::channel(());
    let mut cap_logged: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0
            && cap_logged.is_none_or(|at| at.elapsed() >= CAP_LOG_INTERVAL)
        {
            tracing::warn!(
                max_connections,
                "connection cap reached; accepting again when a connection closes"
            );
            cap_logged = Some(Instant::now());
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if !is_connection_error(&err) {
                        tracing::error!(error = %err, "accept failed");
                        tokio::select! {
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                            () = &mut shutdown => break,
                        }
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            io: TokioIo::new(Slot::new(stream, slot, config.write_idle_timeout())),
            remote,
            service: TowerToHyperService::new(app.clone()),
            stop: stopped.clone(),
            _running: running_rx.clone(),
        };
        tokio::spawn(connection.serve(builder.clone()));
    }
    drop(listener);
    drop(running_rx);
    let _ = stop.send(true);
    let grace = config.shutdown_grace();
    if tokio::time::timeout(grace, running.closed()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still open after the shutdown grace; dropping them"
        );
    }
}

/// Returns hyper's HTTP/1.1 settings for `config`.
fn builder(config: &HttpConfig) -> http1::Builder {
    // Never below hyper's minimum buffer, so that a tiny configured limit still lets ordinary
    // heads through to the API's own check.
    let head_limit =
        (HYPER_LIMIT_FACTOR * (config.max_uri_bytes + config.max_header_bytes)).max(HYPER_MIN_HEAD);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout())
        .max_headers(HYPER_LIMIT_FACTOR * config.max_header_count.max(1))
        .max_header_size(head_limit)
        .max_buf_size(head_limit.max(HYPER_DEFAULT_BUF));
    builder
}

/// One accepted connection until it ends (or is upgraded, after which the socket lives on in
/// the websocket and keeps its slot).
struct Connection {
    io: TokioIo<Slot>,
    remote: SocketAddr,
    service: TowerToHyperService<Router>,
    stop: watch::Receiver<bool>,
    _running: watch::Receiver<()>,
}

impl Connection {
    async fn serve(mut self, builder: http1::Builder) {
        let connection = builder
            .serve_connection(self.io, self.service)
            .with_upgrades();
        tokio::pin!(connection);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        // Timeouts, resets and malformed requests: the client's affair.
                        tracing::debug!(remote = %self.remote, error = %err, "connection ended with an error");
                    }
                    break;
                }
                _ = self.stop.wait_for(|stop| *stop), if !stopping => {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// An accepted socket holding one of the `http.max_connections` slots, released (with the
/// gauge) when the socket is dropped, whether by hyper or by the websocket it was upgraded to.
struct Slot {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// A write the client does not take for `http.write_idle_timeout_ms` fails (and the
    /// connection ends).
    write_deadline: IdleDeadline,
}

impl Slot {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, write_timeout: Duration) -> Self {
        metrics::gauge!("unify_http_connections").increment(1.0);
        Slot {
            stream,
            _permit: permit,
            write_deadline: IdleDeadline::new(write_timeout),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("unify_http_connections").decrement(1.0);
    }
}

impl AsyncRead for Slot {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slot {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.unless_stalled(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.unless_stalled(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Slot {
    /// Passes a write's result on; a write that has waited for the client longer than the
    /// write timeout fails instead, so that a client that stops reading cannot keep its slot
    /// (or a graceful shutdown) waiting.
    fn unless_stalled(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match self.write_deadline.track(cx, written) {
            IdlePoll::Ready(result) => Poll::Ready(result),
            IdlePoll::Pending => Poll::Pending,
            IdlePoll::Expired => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the write timeout",
            ))),
        }
    }
}

/// Errors of one failed connection, after which accepting continues at once.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
