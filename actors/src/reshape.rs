//! The re-shaping of scopes: integrate (an account's caac and maac orgs join one scope) and
//! disconnect (they split again). Both stop the scopes they change, rewrite the scope and
//! org records in one durable batch, and start the result, which re-unifies in the
//! background; on a failure the old scopes are started again rather than left stopped.
//!
//! It owns no state of its own: it takes the directory's lock, so re-shaping is serialized
//! with directory writes. It may call the directory, the scope client and the supervisor;
//! it never imports the runtime.

use std::sync::Arc;

use unify_storage::{Id, IdKind, JobKind, Org, PendingJob, ScopeRecord, StoreError, WriteBatch};

use crate::clock::now_millis;
use crate::directory::Directory;
use crate::error::{Code, OpError};
use crate::key_change::KeyChange;
use crate::links::{key_records, scope_keys};
use crate::scope_client::ScopeClient;
use crate::supervisor::SupervisorHandle;

/// Integrate and disconnect.
#[derive(Debug)]
pub struct Reshape {
    client: Arc<ScopeClient>,
    supervisor: Arc<SupervisorHandle>,
    directory: Arc<Directory>,
}

impl Reshape {
    pub fn new(
        client: Arc<ScopeClient>,
        supervisor: Arc<SupervisorHandle>,
        directory: Arc<Directory>,
    ) -> Reshape {
        Reshape {
            client,
            supervisor,
            directory,
        }
    }

    /// Joins the account's caac and maac orgs into the caac org's scope with `keys`, and
    /// schedules the re-unification of the joined scope.
    ///
    /// `keys` is the key list (`Vec<UnifyKey>`) or a change resolved against the caac scope's
    /// keys once its actor is stopped (e.g. `KeyChange::Replace`, which keeps `is_distinct`).
    pub async fn integrate(
        &self,
        account_id: Id,
        keys: impl Into<KeyChange>,
    ) -> Result<ScopeRecord, OpError> {
        let change = keys.into();
        let _admin = self.directory.lock().await;
        let store = self.client.store();
        let (caac, maac) = self.directory.account_orgs(account_id)?;
        let scope = store.get_scope(caac.scope_id)?;
        if scope.org_ids.len() > 1 || caac.scope_id == maac.scope_id {
            return Err(OpError::conflict(
                Code::CdhAlreadyConnected,
                "the account is already connected",
            ));
        }
        // Refuse an invalid key list before anything is stopped.
        let current = scope_keys(&scope)
            .map_err(|e| StoreError::Corrupt(format!("scope {}: {e}", scope.id)))?;
        change.clone().resolve(&scope, &current)?;
        let absorbed = maac.scope_id;
        self.supervisor.stop_scope(scope.id, false).await;
        self.supervisor.stop_scope(absorbed, true).await;
        // Read again now that no actor writes it (its last seq may have moved), and on any
        // failure start the old scopes again rather than leave them stopped.
        let joined = async {
            let mut scope = store.get_scope(caac.scope_id)?;
            let current = scope_keys(&scope)
                .map_err(|e| StoreError::Corrupt(format!("scope {}: {e}", scope.id)))?;
            let keys = change.resolve(&scope, &current)?;
            let now = now_millis();
            scope.org_ids = vec![caac.id, maac.id];
            scope.org_ids.sort_unstable();
            scope.keys = key_records(store, &scope.keys, &keys)?;
            scope.pending_job = Some(PendingJob {
                kind: JobKind::Integrate,
                scheduled_at: now,
            });
            scope.updated_at = now;
            let maac = Org {
                scope_id: scope.id,
                ..maac
            };
            let mut batch = WriteBatch::new();
            batch
                .put_scope(&scope)
                .put_org(&maac)
                .delete_scope(absorbed);
            self.directory.write(batch).await?;
            Ok::<_, OpError>(scope)
        }
        .await;
        let scope = match joined {
            Ok(scope) => scope,
            Err(e) => {
                let _ = self.supervisor.start_scope(caac.scope_id).await;
                let _ = self.supervisor.start_scope(absorbed).await;
                return Err(e);
            }
        };
        self.supervisor.start_scope(scope.id).await?;
        Ok(scope)
    }

    /// Splits a connected scope: the caac org keeps the scope and keys, the maac org gets a new
    /// scope with the same keys; both re-unify.
    pub async fn disconnect(&self, account_id: Id) -> Result<(), OpError> {
        let _admin = self.directory.lock().await;
        let store = self.client.store();
        let (caac, maac) = self.directory.account_orgs(account_id)?;
        let scope = store.get_scope(caac.scope_id)?;
        if scope.org_ids.len() < 2 {
            return Err(OpError::conflict(
                Code::CdhNotConnected,
                "the account is not connected",
            ));
        }
        self.supervisor.stop_scope(scope.id, false).await;
        // Read again now that no actor writes it, and on any failure start the scope again
        // rather than leave it stopped.
        let split = async {
            let mut scope = store.get_scope(caac.scope_id)?;
            let now = now_millis();
            let job = Some(PendingJob {
                kind: JobKind::Disconnect,
                scheduled_at: now,
            });
            let keys = scope_keys(&scope)
                .map_err(|e| StoreError::Corrupt(format!("scope {}: {e}", scope.id)))?;
            let split = ScopeRecord {
                id: store.allocate_ids(IdKind::Scope, 1)?.start,
                org_ids: vec![maac.id],
                keys: key_records(store, &[], keys.keys())?,
                last_seq: 0,
                pending_job: job.clone(),
                created_at: now,
                updated_at: now,
            };
            scope.org_ids = vec![caac.id];
            scope.pending_job = job;
            scope.updated_at = now;
            let maac = Org {
                scope_id: split.id,
                ..maac
            };
            let mut batch = WriteBatch::new();
            batch.put_scope(&scope).put_scope(&split).put_org(&maac);
            self.directory.write(batch).await?;
            Ok::<_, OpError>(split)
        }
        .await;
        let split = match split {
            Ok(split) => split,
            Err(e) => {
                let _ = self.supervisor.start_scope(caac.scope_id).await;
                return Err(e);
            }
        };
        self.supervisor.start_scope(scope.id).await?;
        self.supervisor.start_scope(split.id).await?;
        Ok(())
    }
}
