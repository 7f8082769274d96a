//! The idle deadline shared by the transport's timeouts: the request body's
//! (`body_timeout.rs`) and the client's reads of what the server writes (`serve.rs`). A leaf
//! of `http/`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How long a wait may last: armed when a wait begins, re-armed after each progress. The
/// timer is made on the first wait only, so that what never waits (most bodies, most writes)
/// costs no timer.
#[derive(Debug)]
pub struct IdleDeadline {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl IdleDeadline {
    pub fn new(timeout: Duration) -> Self {
        IdleDeadline {
            timeout,
            sleep: None,
            waiting: false,
        }
    }

    /// Records that the awaited thing was ready: the next wait starts a new deadline.
    fn progressed(&mut self) {
        self.waiting = false;
    }

    /// Records that the awaited thing is not ready; returns whether the wait has lasted longer
    /// than the timeout (else `cx` is woken when it will have).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            self.waiting = true;
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx).is_ready()
    }

    /// Passes `result` on, marking progress when it is ready.
    pub fn track<T>(&mut self, cx: &mut Context<'_>, result: Poll<T>) -> IdlePoll<T> {
        match result {
            Poll::Ready(value) => {
                self.progressed();
                IdlePoll::Ready(value)
            }
            Poll::Pending if self.expired(cx) => IdlePoll::Expired,
            Poll::Pending => IdlePoll::Pending,
        }
    }
}

/// What [`IdleDeadline::track`] saw.
#[derive(Debug)]
pub enum IdlePoll<T> {
    Ready(T),
    Pending,
    /// Pending for longer than the timeout.
    Expired,
}
