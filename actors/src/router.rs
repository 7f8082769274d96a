//! Routing of calls to scope actors, with timeouts, shared by the runtime and member actors.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::RpcReplyPort;
use ractor::rpc::CallResult;
use unify_storage::{Id, Store};

use crate::error::{OpError, found};
use crate::scope::ScopeMsg;
use crate::settings::Settings;
use crate::supervisor::{Registry, ScopeEntry};

/// Finds the scope actor of an org and calls it.
#[derive(Debug)]
pub struct Router {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub scopes: Arc<Registry>,
}

impl Router {
    /// Returns the scope the org belongs to now.
    pub fn scope_of(&self, org_id: Id) -> Result<Id, OpError> {
        Ok(found(self.store.get_org(org_id), "organization")?.scope_id)
    }

    /// Returns the scope's routing entry; a stopped or failed scope is `Unavailable`.
    pub fn entry(&self, scope_id: Id) -> Result<ScopeEntry, OpError> {
        let entry = self
            .scopes
            .get(scope_id)
            .ok_or_else(|| OpError::Unavailable("the scope is not running".into()))?;
        if entry.status.failed.load(Ordering::Acquire) {
            return Err(OpError::Unavailable(
                "the scope failed and is not restarted".into(),
            ));
        }
        Ok(entry)
    }

    /// Calls the scope's actor with the configured timeout. A dropped reply (the actor failed
    /// mid-batch) or a timeout is `Unavailable`, never a hang.
    pub async fn call<T: Send + 'static>(
        &self,
        scope_id: Id,
        build: impl FnOnce(RpcReplyPort<Result<T, OpError>>) -> ScopeMsg,
    ) -> Result<T, OpError> {
        let actor = self
            .entry(scope_id)?
            .actor
            .ok_or_else(|| OpError::Unavailable("the scope is restarting".into()))?;
        match actor.call(build, Some(self.settings.call_timeout)).await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(OpError::Unavailable(
                "the scope did not answer in time".into(),
            )),
            Ok(CallResult::SenderError) | Err(_) => Err(OpError::Unavailable(
                "the scope stopped before answering".into(),
            )),
        }
    }
}
