//! The one way into a scope actor: [`ScopeClient`] resolves an org's scope and calls its
//! actor under a named policy, so "find the scope, then call it" is written once.
//!
//! The policies are its methods: [`ScopeClient::call`] (with the configured timeout, used by
//! actors already counted against the scope), [`ScopeClient::call_admitted`] (counted against
//! the scope's in-flight bound, `Overloaded` past it: every API call),
//! [`ScopeClient::call_retrying`] (three attempts while the scope is unavailable or
//! overloaded: provisioning), [`ScopeClient::call_within`] (a timeout of the caller's: import
//! chunks), and [`ScopeClient::import_guard`] (counts a running import in the scope's merge
//! state).
//!
//! Below the services and the member actors; it may call the supervisor's routing table and
//! send the messages of `protocol`, nothing above.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use unify_storage::{Health, Id, Store, StoreError};

use crate::error::{OpError, found};
use crate::protocol::ScopeMsg;
use crate::settings::Settings;
use crate::status::ScopeStatus;
use crate::supervisor::{Registry, ScopeEntry};

/// Attempts of [`ScopeClient::call_retrying`].
const ATTEMPTS: u32 = 3;

/// Finds the scope actor of an org and calls it.
#[derive(Debug)]
pub struct ScopeClient {
    store: Store,
    settings: Arc<Settings>,
    scopes: Arc<Registry>,
}

/// Counts one admitted operation in its scope until dropped.
#[derive(Debug)]
pub struct Admission {
    status: Arc<ScopeStatus>,
    mutating: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.status.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.mutating {
            self.status.mutating.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl ScopeClient {
    pub fn new(store: Store, settings: Arc<Settings>, scopes: Arc<Registry>) -> ScopeClient {
        ScopeClient {
            store,
            settings,
            scopes,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// Returns whether every scope actor is running (none failed, none restarting).
    pub fn all_running(&self) -> bool {
        self.scopes.all_running()
    }

    /// Returns the status of every running (or failed) scope, by scope id.
    pub fn statuses(&self) -> Vec<(Id, Arc<ScopeStatus>)> {
        self.scopes.statuses()
    }

    /// Returns the status of a scope, running or not.
    pub fn status(&self, scope_id: Id) -> Option<Arc<ScopeStatus>> {
        self.scopes.get(scope_id).map(|e| e.status)
    }

    /// Returns the scope the org belongs to now.
    pub fn scope_of(&self, org_id: Id) -> Result<Id, OpError> {
        Ok(found(self.store.get_org(org_id), "organization")?.scope_id)
    }

    /// Returns the commit-lane lock of the org's scope, whatever its state: held while a lane
    /// writes, even one whose actor is gone (see `ScopeStatus::lane_lock`).
    pub fn lane_lock(&self, org_id: Id) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let scope_id = self.scope_of(org_id).ok()?;
        Some(self.scopes.get(scope_id)?.status.lane_lock.clone())
    }

    /// Returns the scope's routing entry; a stopped or failed scope is `Unavailable`.
    pub fn entry(&self, scope_id: Id) -> Result<ScopeEntry, OpError> {
        let entry = self
            .scopes
            .get(scope_id)
            .ok_or_else(|| self.unavailable("the scope is not running"))?;
        if entry.status.failed.load(Ordering::Acquire) {
            return Err(OpError::Unavailable(
                "the scope failed and is not restarted".into(),
            ));
        }
        Ok(entry)
    }

    /// Returns whether the org's scope is marked failed (it is not restarted).
    pub fn scope_failed(&self, org_id: Id) -> bool {
        self.scope_of(org_id).is_ok_and(|scope_id| {
            self.scopes
                .get(scope_id)
                .is_some_and(|entry| entry.status.failed.load(Ordering::Acquire))
        })
    }

    /// Counts one operation against the scope's in-flight bound (`Overloaded` past it).
    pub fn admit(&self, scope_id: Id, mutating: bool) -> Result<Admission, OpError> {
        let status = self.entry(scope_id)?.status;
        let before = status.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.settings.max_in_flight_per_scope {
            status.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(OpError::Overloaded);
        }
        if mutating {
            status.mutating.fetch_add(1, Ordering::AcqRel);
        }
        Ok(Admission { status, mutating })
    }

    /// Calls the org's scope with the configured timeout, not admitted (the caller is already
    /// counted, or is an actor of the runtime).
    pub async fn call<T: Send + 'static>(
        &self,
        org_id: Id,
        build: impl FnOnce(RpcReplyPort<Result<T, OpError>>) -> ScopeMsg,
    ) -> Result<T, OpError> {
        self.call_within(org_id, self.settings.call_timeout, build)
            .await
    }

    /// Admits and calls the org's scope.
    pub async fn call_admitted<T: Send + 'static>(
        &self,
        org_id: Id,
        mutating: bool,
        build: impl FnOnce(RpcReplyPort<Result<T, OpError>>) -> ScopeMsg,
    ) -> Result<T, OpError> {
        let scope_id = self.scope_of(org_id)?;
        let _admission = self.admit(scope_id, mutating)?;
        self.call_scope(scope_id, self.settings.call_timeout, build)
            .await
    }

    /// Calls the org's scope, retrying briefly (three attempts in all) while it is unavailable
    /// or overloaded, unless `closing` is set.
    pub async fn call_retrying<T: Send + 'static>(
        &self,
        org_id: Id,
        closing: &AtomicBool,
        build: impl Fn(RpcReplyPort<Result<T, OpError>>) -> ScopeMsg,
    ) -> Result<T, OpError> {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.call(org_id, &build).await {
                Err(OpError::Unavailable(_) | OpError::Overloaded)
                    if attempt < ATTEMPTS && !closing.load(Ordering::Acquire) =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Calls the org's scope with a timeout of the caller's, not admitted.
    pub async fn call_within<T: Send + 'static>(
        &self,
        org_id: Id,
        timeout: Duration,
        build: impl FnOnce(RpcReplyPort<Result<T, OpError>>) -> ScopeMsg,
    ) -> Result<T, OpError> {
        let scope_id = self.scope_of(org_id)?;
        self.call_scope(scope_id, timeout, build).await
    }

    /// Sends a message to the org's scope without waiting (supervision tests).
    pub fn send(&self, org_id: Id, message: ScopeMsg) -> Result<(), OpError> {
        self.actor(self.scope_of(org_id)?)?
            .send_message(message)
            .map_err(|e| OpError::Unavailable(e.to_string()))
    }

    /// Kills the org's scope actor as a signal does: no `post_stop`, its mailbox dropped (a
    /// fault for tests).
    pub fn kill(&self, org_id: Id) -> Result<(), OpError> {
        self.actor(self.scope_of(org_id)?)?.kill();
        Ok(())
    }

    /// Returns a guard that keeps the org's scope's merge state unfinished while an import
    /// runs.
    pub fn import_guard(&self, org_id: Id) -> ImportGuard {
        let status = self
            .scope_of(org_id)
            .ok()
            .and_then(|scope_id| self.scopes.get(scope_id))
            .map(|entry| entry.status);
        if let Some(status) = &status {
            status.imports.fetch_add(1, Ordering::AcqRel);
        }
        ImportGuard { status }
    }

    /// Returns the scope's actor; a scope restarting (or stopped, failed) is `Unavailable`.
    fn actor(&self, scope_id: Id) -> Result<ActorRef<ScopeMsg>, OpError> {
        self.entry(scope_id)?
            .actor
            .ok_or_else(|| self.unavailable("the scope is restarting"))
    }

    /// Returns the error of a scope that cannot answer: while the store cannot write, the
    /// store's (the scope failed on it, or waits for it to recover), so that the answer says
    /// the store cannot write; otherwise `Unavailable(why)`.
    fn unavailable(&self, why: &str) -> OpError {
        if self.store.health() == Health::Failed {
            return OpError::Storage(StoreError::Unavailable {
                cause: std::io::Error::other(format!("{why}; the store failed and is recovering")),
            });
        }
        OpError::Unavailable(why.to_owned())
    }

    /// Calls the scope's actor. A dropped reply (the actor failed mid-batch) or a timeout is
    /// `Unavailable`, never a hang.
    async fn call_scope<T: Send + 'static>(
        &self,
        scope_id: Id,
        timeout: Duration,
        build: impl FnOnce(RpcReplyPort<Result<T, OpError>>) -> ScopeMsg,
    ) -> Result<T, OpError> {
        match self.actor(scope_id)?.call(build, Some(timeout)).await {
            Ok(CallResult::Success(Err(OpError::Unavailable(why)))) => Err(self.unavailable(&why)),
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(self.unavailable("the scope did not answer in time")),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(self.unavailable("the scope stopped before answering"))
            }
        }
    }
}

/// Keeps a scope's merge state unfinished while an import runs (see
/// [`ScopeClient::import_guard`]).
#[derive(Debug)]
pub struct ImportGuard {
    status: Option<Arc<ScopeStatus>>,
}

impl Drop for ImportGuard {
    fn drop(&mut self) {
        if let Some(status) = &self.status {
            status.imports.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
