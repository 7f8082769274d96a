//! The runtime: the one handle the binary and the HTTP layer use. It boots the supervisor,
//! admits work with per-scope bounds (`Overloaded` past them), routes member mutations through
//! member actors, and performs the directory writes (accounts, orgs, channels) and the scope
//! re-shaping of integrate and disconnect.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::{Actor, ActorRef};
use rand::Rng;
use tokio::sync::Mutex;
use unify_storage::{
    Account, Channel, ContactApi, Id, IdKind, JobKind, Member, Org, PendingJob, ScopeRecord,
    Source, Store, StoreError, WriteBatch,
};

use crate::clock::now_millis;
use crate::engine::{DryRun, Explanation, HotValue, KeySet, UnifyKey};
use crate::error::{Code, OpError, found};
use crate::hub::Hub;
use crate::key_change::KeyChange;
use crate::links::{key_records, scope_keys};
use crate::member::MemberRegistry;
use crate::ops::{MemberOp, NewMember};
use crate::router::Router;
use crate::scope::{ProfileView, ScopeMsg};
use crate::settings::Settings;
use crate::status::ScopeStatus;
use crate::supervisor::{Registry, Supervisor, SupervisorArgs, SupervisorMsg};

/// Channel types a channel may have.
pub const CHANNEL_TYPES: &[&str] = &[
    "line",
    "fb",
    "instagram",
    "whatsapp",
    "feishu",
    "webchat",
    "other",
];

/// A channel to create.
#[derive(Debug, Clone, Default)]
pub struct NewChannel {
    pub name: String,
    pub channel_type: String,
    pub tenant_key: Option<String>,
    pub auto_provision: bool,
    pub contact_api: Option<ContactApi>,
}

/// The running engine.
#[derive(Debug)]
pub struct Runtime {
    router: Arc<Router>,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    members: Arc<MemberRegistry>,
    hub: Hub,
    /// Running bulk-import drivers.
    imports: crate::import::Imports,
    /// Serializes directory writes and scope re-shaping, which are rare.
    pub(crate) admin: Mutex<()>,
    /// The CDH bridge (runs only when a CDH is configured).
    pub(crate) cdh: crate::bridge::Cdh,
    /// Channel-event provisioning (SPEC 6).
    pub(crate) provisioner: Arc<crate::provision::Provisioner>,
}

/// Counts one admitted operation in its scope until dropped.
struct Admission {
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

impl Runtime {
    /// Boots the supervisor and every stored scope.
    pub async fn start(store: Store, settings: Settings) -> Result<Runtime, OpError> {
        let settings = Arc::new(Settings {
            cdh_enabled: settings.cdh_enabled || settings.cdh.is_some(),
            ..settings
        });
        let registry = Arc::new(Registry::default());
        let hub = Hub::default();
        let args = SupervisorArgs {
            store: store.clone(),
            settings: settings.clone(),
            registry: registry.clone(),
            hub: hub.clone(),
        };
        let (supervisor, task) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| OpError::Unavailable(format!("supervisor failed to start: {e}")))?;
        let cdh = crate::bridge::Cdh::start(store.clone(), &settings, hub.clone()).await?;
        let router = Arc::new(Router {
            store,
            settings,
            scopes: registry,
        });
        let members: Arc<MemberRegistry> = Arc::default();
        let provisioner = crate::provision::Provisioner::new(router.clone(), members.clone())?;
        let runtime = Runtime {
            router,
            supervisor,
            supervisor_task: Mutex::new(Some(task)),
            members,
            hub,
            imports: crate::import::Imports::default(),
            admin: Mutex::new(()),
            cdh,
            provisioner,
        };
        runtime.imports.resume(&runtime.router).await?;
        runtime.provisioner.start();
        Ok(runtime)
    }

    /// Stops every actor (each scope commits what it handled) and flushes the store.
    pub async fn shutdown(&self) -> Result<(), OpError> {
        self.provisioner.stop();
        self.cdh.stop().await;
        self.imports.stop_all().await;
        self.members.stop_all().await;
        self.supervisor.stop(None);
        if let Some(task) = self.supervisor_task.lock().await.take() {
            let _ = task.await;
        }
        self.router.store.flush_async().await?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.router.store
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn settings(&self) -> &Settings {
        &self.router.settings
    }

    /// Returns whether every scope actor is running (none failed, none restarting).
    pub fn is_ready(&self) -> bool {
        self.router.scopes.all_running()
    }

    /// Returns the ids of scopes marked failed.
    pub fn failed_scopes(&self) -> Vec<Id> {
        self.router
            .scopes
            .statuses()
            .into_iter()
            .filter(|(_, s)| s.failed.load(Ordering::Acquire))
            .map(|(id, _)| id)
            .collect()
    }

    /// Returns the status of every running (or failed) scope, by scope id.
    pub fn scope_statuses(&self) -> Vec<(Id, Arc<ScopeStatus>)> {
        self.router.scopes.statuses()
    }

    /// Returns the status of a scope.
    pub fn scope_status(&self, scope_id: Id) -> Option<Arc<ScopeStatus>> {
        self.router.scopes.get(scope_id).map(|e| e.status)
    }

    /// Returns the scope of an org.
    pub fn scope_of(&self, org_id: Id) -> Result<Id, OpError> {
        self.router.scope_of(org_id)
    }

    fn admit(&self, scope_id: Id, mutating: bool) -> Result<Admission, OpError> {
        let status = self.router.entry(scope_id)?.status;
        let before = status.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.router.settings.max_in_flight_per_scope {
            status.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(OpError::Overloaded);
        }
        if mutating {
            status.mutating.fetch_add(1, Ordering::AcqRel);
        }
        Ok(Admission { status, mutating })
    }

    /// Admits and calls the org's scope.
    async fn call<T: Send + 'static>(
        &self,
        org_id: Id,
        mutating: bool,
        build: impl FnOnce(ractor::RpcReplyPort<Result<T, OpError>>) -> ScopeMsg,
    ) -> Result<T, OpError> {
        let scope_id = self.router.scope_of(org_id)?;
        let _admission = self.admit(scope_id, mutating)?;
        self.router.call(scope_id, build).await
    }

    // ----------------------------------------------------------------------------------------
    // Members.

    /// Starts a bulk import of NDJSON members (`POST /chat/members/import`): streams the body
    /// to a spool file next to the store (never into memory), fsyncs it, records the job and
    /// returns its id; the members are created in the background (see [`crate::import`]). The
    /// job resumes after a restart. `NotFound` if the org does not exist; `InvalidArgument` if
    /// the body stream fails.
    pub async fn start_import<S, B, E>(&self, org_id: Id, body: S) -> Result<Id, OpError>
    where
        S: futures_util::Stream<Item = Result<B, E>> + Send + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        crate::import::start(&self.imports, &self.router, org_id, body).await
    }

    /// Returns an import job of the org (`GET /imports/:job_id`); `NotFound` for a job of
    /// another org.
    pub fn import_status(
        &self,
        org_id: Id,
        job_id: Id,
    ) -> Result<unify_storage::ImportJob, OpError> {
        crate::import::status(&self.router.store, org_id, job_id)
    }

    /// Creates a member, or returns the existing one (`false`) with the same identity. The
    /// create runs in the identity's actor, so concurrent identical creates make one member.
    pub async fn create_member(
        &self,
        org_id: Id,
        member: NewMember,
    ) -> Result<(Member, bool), OpError> {
        let identity = crate::member::Identity {
            org_id,
            channel_id: member.channel_id,
            external_member_id: member.external_member_id.clone(),
        };
        self.with_identity(identity, move |handle| async move {
            handle
                .get_or_create(member, crate::events::Reason::MemberCreated)
                .await
        })
        .await
    }

    /// Runs `work` in the actor of one identity `(org, channel, external_member_id)`, after
    /// the creates and provisionings of that identity queued before it, and returns its
    /// result. Provisioning (SPEC 6) uses it for "get or create, then maybe update": `work`
    /// gets an [`crate::member::IdentityHandle`] with `find`, `get_or_create` and `mutate`
    /// (the latter through the member's own actor), and may do slow work (a contact-API
    /// fetch) without blocking the scope. Admitted like a mutation of the org's scope.
    pub async fn with_identity<T, F, Fut>(
        &self,
        identity: crate::member::Identity,
        work: F,
    ) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: FnOnce(crate::member::IdentityHandle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, OpError>> + Send + 'static,
    {
        let scope_id = self.router.scope_of(identity.org_id)?;
        let _admission = self.admit(scope_id, true)?;
        self.members.run(&self.router, identity, work).await
    }

    /// Creates many members in one scope call (bulk import).
    pub async fn import_members(
        &self,
        org_id: Id,
        members: Vec<NewMember>,
    ) -> Result<Vec<Result<Member, OpError>>, OpError> {
        self.call(org_id, true, |reply| ScopeMsg::CreateMany {
            org_id,
            members,
            reply,
        })
        .await
    }

    /// Applies an operation to a member through its member actor; `None` after a delete.
    pub async fn member_op(
        &self,
        org_id: Id,
        member_id: Id,
        op: MemberOp,
    ) -> Result<Option<Member>, OpError> {
        let scope_id = self.router.scope_of(org_id)?;
        // A member actor is spawned only for a member of the org: ids that name nothing (or
        // another org's member) are refused before they cost an actor.
        self.stored_member_of(org_id, member_id)?;
        let _admission = self.admit(scope_id, true)?;
        self.members.send(&self.router, member_id, org_id, op).await
    }

    /// Reads a member. When no commit of its scope is under way the durable store answers
    /// directly, so reads stay fast while the scope actor is busy (a job, an import); otherwise
    /// the scope actor answers once the pending batch is durable.
    pub async fn get_member(&self, org_id: Id, member_id: Id) -> Result<Member, OpError> {
        if let Some(result) = self.read_member_directly(org_id, member_id)? {
            return result;
        }
        self.call(org_id, false, |reply| ScopeMsg::GetMember {
            org_id,
            member_id,
            reply,
        })
        .await
    }

    /// Reads a member from the store if that read provably saw only durable data: the scope's
    /// commit epoch was even before and unchanged after the read. `None`: ask the actor.
    fn read_member_directly(
        &self,
        org_id: Id,
        member_id: Id,
    ) -> Result<Option<Result<Member, OpError>>, OpError> {
        let scope_id = self.router.scope_of(org_id)?;
        let status = self.router.entry(scope_id)?.status;
        let before = status.commit_epoch.load(Ordering::Acquire);
        if before % 2 == 1 || !status.running.load(Ordering::Acquire) {
            return Ok(None);
        }
        let read = self.stored_member_of(org_id, member_id);
        if status.commit_epoch.load(Ordering::Acquire) != before {
            return Ok(None);
        }
        Ok(Some(read))
    }

    /// Reads a member of `org_id` from the store; a member of another org is not found.
    fn stored_member_of(&self, org_id: Id, member_id: Id) -> Result<Member, OpError> {
        match found(self.router.store.get_member(member_id), "member")? {
            member if member.org_id == org_id => Ok(member),
            _ => Err(OpError::NotFound("member")),
        }
    }

    /// Lists an org's members by ascending id (read from the store: paging needs no actor).
    pub fn list_members(
        &self,
        org_id: Id,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, OpError> {
        found(self.router.store.get_org(org_id), "organization")?;
        Ok(self
            .router
            .store
            .members_of_org_page(org_id, after, limit)?)
    }

    /// Returns the other members of the member's profile with their channels.
    pub async fn unification(
        &self,
        org_id: Id,
        member_id: Id,
    ) -> Result<Vec<(Member, Option<Channel>)>, OpError> {
        let members = self
            .call(org_id, false, |reply| ScopeMsg::Unification {
                org_id,
                member_id,
                reply,
            })
            .await?;
        members
            .into_iter()
            .map(|m| {
                let channel = match m.channel_id {
                    Some(id) => Some(found(self.router.store.get_channel(id), "channel")?),
                    None => None,
                };
                Ok((m, channel))
            })
            .collect()
    }

    pub async fn profile(&self, org_id: Id, member_id: Id) -> Result<ProfileView, OpError> {
        self.call(org_id, false, |reply| ScopeMsg::Profile {
            org_id,
            member_id,
            reply,
        })
        .await
    }

    pub async fn explain(
        &self,
        org_id: Id,
        member_id: Id,
        other: Id,
    ) -> Result<Explanation, OpError> {
        self.call(org_id, false, |reply| ScopeMsg::Explain {
            org_id,
            member_id,
            other,
            reply,
        })
        .await
    }

    /// Returns whether no operation on the member is queued or running.
    pub async fn member_merge_state(&self, org_id: Id, member_id: Id) -> Result<bool, OpError> {
        self.get_member(org_id, member_id).await?;
        Ok(self.members.queued(member_id).await == 0)
    }

    // ----------------------------------------------------------------------------------------
    // Unify settings.

    pub async fn setting(&self, org_id: Id) -> Result<ScopeRecord, OpError> {
        self.call(org_id, false, |reply| ScopeMsg::Setting { reply })
            .await
    }

    /// Replaces the org's scope keys and schedules re-unification; returns the new setting.
    pub async fn set_keys(&self, org_id: Id, keys: Vec<UnifyKey>) -> Result<ScopeRecord, OpError> {
        self.change_keys(org_id, KeyChange::Set(keys)).await
    }

    /// Applies a key change to the org's scope (its preconditions are checked in the scope
    /// actor) and schedules re-unification; returns the new setting.
    pub async fn change_keys(&self, org_id: Id, change: KeyChange) -> Result<ScopeRecord, OpError> {
        self.call(org_id, true, |reply| ScopeMsg::SetKeys { change, reply })
            .await
    }

    pub async fn dry_run(&self, org_id: Id, keys: KeySet) -> Result<DryRun, OpError> {
        self.call(org_id, false, |reply| ScopeMsg::DryRun { keys, reply })
            .await
    }

    pub async fn hot_values(&self, org_id: Id) -> Result<Vec<HotValue>, OpError> {
        self.call(org_id, false, |reply| ScopeMsg::HotValues { reply })
            .await
    }

    /// Returns whether the org's scope has no pending unification work.
    pub fn scope_merge_state(&self, org_id: Id) -> Result<bool, OpError> {
        let scope_id = self.router.scope_of(org_id)?;
        Ok(self.router.entry(scope_id)?.status.is_finished())
    }

    // ----------------------------------------------------------------------------------------
    // Directory.

    pub async fn create_account(&self, name: &str) -> Result<Account, OpError> {
        if name.trim().is_empty() {
            return Err(OpError::invalid("name must not be empty"));
        }
        let _admin = self.admin.lock().await;
        let store = &self.router.store;
        let account = Account {
            id: store.allocate_ids(IdKind::Account, 1)?.start,
            name: name.to_owned(),
            uuid: random_uuid(),
            created_at: now_millis(),
        };
        let mut batch = WriteBatch::new();
        batch.put_account(&account);
        self.write(batch).await?;
        Ok(account)
    }

    /// Creates an org in a new scope of its own and starts that scope.
    pub async fn create_org(
        &self,
        account_id: Id,
        source: Source,
        name: &str,
        uuid: Option<String>,
    ) -> Result<Org, OpError> {
        if name.trim().is_empty() {
            return Err(OpError::invalid("name must not be empty"));
        }
        let _admin = self.admin.lock().await;
        let store = &self.router.store;
        found(store.get_account(account_id), "account")?;
        if store
            .orgs_of_account(account_id)?
            .iter()
            .any(|o| o.source == source)
        {
            return Err(OpError::conflict(
                Code::OrganizationExists,
                format!("the account already has a {} organization", source.as_str()),
            ));
        }
        let now = now_millis();
        let org_id = store.allocate_ids(IdKind::Org, 1)?.start;
        let scope_id = store.allocate_ids(IdKind::Scope, 1)?.start;
        let org = Org {
            id: org_id,
            account_id,
            source,
            name: name.to_owned(),
            uuid: uuid.unwrap_or_else(random_uuid),
            scope_id,
            created_at: now,
        };
        let scope = ScopeRecord {
            id: scope_id,
            org_ids: vec![org_id],
            keys: Vec::new(),
            last_seq: 0,
            pending_job: None,
            created_at: now,
            updated_at: now,
        };
        let mut batch = WriteBatch::new();
        batch.put_org(&org).put_scope(&scope);
        self.write(batch).await?;
        self.start_scope(scope_id).await?;
        Ok(org)
    }

    /// Creates a channel of a caac org; the webhook secret is in the returned record only.
    pub async fn create_channel(&self, org_id: Id, new: NewChannel) -> Result<Channel, OpError> {
        let new = self.settle_new_channel(new).await?;
        let _admin = self.admin.lock().await;
        let store = &self.router.store;
        let org = found(store.get_org(org_id), "organization")?;
        if org.source != Source::Caac {
            return Err(OpError::invalid("only caac organizations have channels"));
        }
        if new.name.trim().is_empty() {
            return Err(OpError::invalid("name must not be empty"));
        }
        if !CHANNEL_TYPES.contains(&new.channel_type.as_str()) {
            return Err(OpError::invalid(format!(
                "type must be one of {}",
                CHANNEL_TYPES.join(", ")
            )));
        }
        let now = now_millis();
        let channel = Channel {
            id: store.allocate_ids(IdKind::Channel, 1)?.start,
            org_id,
            name: new.name,
            channel_type: new.channel_type,
            tenant_key: new.tenant_key,
            auto_provision: new.auto_provision,
            contact_api: new.contact_api,
            webhook_secret: random_hex(32),
            created_at: now,
            updated_at: now,
        };
        crate::provision::check_channel(&channel)?;
        let mut batch = WriteBatch::new();
        batch.put_channel(&channel);
        self.write(batch).await?;
        Ok(channel)
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
        let _admin = self.admin.lock().await;
        let store = &self.router.store;
        let (caac, maac) = self.account_orgs(account_id)?;
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
        self.stop_scope(scope.id, false).await;
        self.stop_scope(absorbed, true).await;
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
            self.write(batch).await?;
            Ok::<_, OpError>(scope)
        }
        .await;
        let scope = match joined {
            Ok(scope) => scope,
            Err(e) => {
                let _ = self.start_scope(caac.scope_id).await;
                let _ = self.start_scope(absorbed).await;
                return Err(e);
            }
        };
        self.start_scope(scope.id).await?;
        Ok(scope)
    }

    /// Splits a connected scope: the caac org keeps the scope and keys, the maac org gets a new
    /// scope with the same keys; both re-unify.
    pub async fn disconnect(&self, account_id: Id) -> Result<(), OpError> {
        let _admin = self.admin.lock().await;
        let store = &self.router.store;
        let (caac, maac) = self.account_orgs(account_id)?;
        let scope = store.get_scope(caac.scope_id)?;
        if scope.org_ids.len() < 2 {
            return Err(OpError::conflict(
                Code::CdhNotConnected,
                "the account is not connected",
            ));
        }
        self.stop_scope(scope.id, false).await;
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
            self.write(batch).await?;
            Ok::<_, OpError>(split)
        }
        .await;
        let split = match split {
            Ok(split) => split,
            Err(e) => {
                let _ = self.start_scope(caac.scope_id).await;
                return Err(e);
            }
        };
        self.start_scope(scope.id).await?;
        self.start_scope(split.id).await?;
        Ok(())
    }

    /// Returns the account's caac and maac orgs, or `MISSING_ORGANIZATION`.
    fn account_orgs(&self, account_id: Id) -> Result<(Org, Org), OpError> {
        let orgs = self.router.store.orgs_of_account(account_id)?;
        let of = |source| orgs.iter().find(|o| o.source == source).cloned();
        match (of(Source::Caac), of(Source::Maac)) {
            (Some(caac), Some(maac)) => Ok((caac, maac)),
            _ => Err(OpError::conflict(
                Code::MissingOrganization,
                "the account needs a caac and a maac organization",
            )),
        }
    }

    async fn write(&self, batch: WriteBatch) -> Result<(), OpError> {
        self.router.store.apply(batch)?;
        self.router.store.flush_async().await?;
        Ok(())
    }

    async fn start_scope(&self, scope_id: Id) -> Result<(), OpError> {
        let started = self
            .supervisor
            .call(|reply| SupervisorMsg::Start { scope_id, reply }, None)
            .await;
        match started {
            Ok(ractor::rpc::CallResult::Success(Ok(()))) => Ok(()),
            Ok(ractor::rpc::CallResult::Success(Err(e))) => Err(OpError::Unavailable(e)),
            _ => Err(OpError::Unavailable("the supervisor is not running".into())),
        }
    }

    async fn stop_scope(&self, scope_id: Id, forget: bool) {
        let _ = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Stop {
                    scope_id,
                    forget,
                    reply,
                },
                None,
            )
            .await;
    }

    /// Makes a scope actor panic (supervision tests).
    #[doc(hidden)]
    pub fn inject_panic(&self, org_id: Id) -> Result<(), OpError> {
        let scope_id = self.router.scope_of(org_id)?;
        let actor = self
            .router
            .entry(scope_id)?
            .actor
            .ok_or(OpError::Unavailable("stopped".into()))?;
        actor
            .send_message(ScopeMsg::Panic)
            .map_err(|e| OpError::Unavailable(e.to_string()))
    }
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// Returns a random (version 4) UUID.
fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        8 + (u8::from_str_radix(&h[16..17], 16).unwrap_or(0) & 3),
        &h[17..20],
        &h[20..32]
    )
}
