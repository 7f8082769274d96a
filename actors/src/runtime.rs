//! The runtime: the one handle the binary and the HTTP layer use. It starts the supervisor
//! and the services, stops them in order, answers readiness, and delegates every other call
//! in one line to the service that owns it:
//!
//! - [`Members`]: member creates, operations and reads, through member and identity actors;
//! - [`Directory`]: accounts, orgs and channels; [`Reshape`]: integrate and disconnect;
//! - [`Provisioner`]: channel events and link codes; [`Imports`]: bulk imports;
//! - [`Cdh`]: the CDH bridge; [`EventLog`]: reads of retained events;
//! - [`ScopeClient`]: the one way into a scope actor (its key settings are asked here).
//!
//! The facade on top: nothing in the crate imports it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use unify_storage::{
    Account, Channel, Health, Id, ImportJob, LinkCode, Member, Org, ScopeRecord, Source, Store,
};

use crate::bridge::{Cdh, SyncState};
pub use crate::channel::{CHANNEL_TYPES, NewChannel};
use crate::directory::{ChannelPatch, Directory};
use crate::engine::{Attribute, DryRun, Explanation, HotValue, KeySet, UnifyKey};
use crate::error::OpError;
use crate::event_log::EventLog;
use crate::hub::Hub;
use crate::import::Imports;
use crate::key_change::KeyChange;
use crate::member::{Identity, IdentityHandle};
use crate::members::Members;
use crate::ops::{MemberOp, NewMember};
use crate::protocol::{MemberGraph, ProfileView, ScopeMsg};
use crate::provision::{Acceptance, ChannelEvent, Provisioner};
use crate::reshape::Reshape;
use crate::scope_client::ScopeClient;
use crate::settings::Settings;
use crate::status::ScopeStatus;
use crate::supervisor::{Registry, SupervisorArgs, SupervisorHandle};

/// The running engine.
#[derive(Debug)]
pub struct Runtime {
    client: Arc<ScopeClient>,
    supervisor: Arc<SupervisorHandle>,
    hub: Hub,
    members: Arc<Members>,
    directory: Arc<Directory>,
    reshape: Reshape,
    /// Running bulk-import drivers.
    imports: Imports,
    /// The CDH bridge (runs only when a CDH is configured).
    cdh: Cdh,
    /// Channel-event provisioning (SPEC 6).
    provisioner: Arc<Provisioner>,
    event_log: EventLog,
}

impl Runtime {
    /// Boots the supervisor and every stored scope, then the services.
    pub async fn start(store: Store, settings: Settings) -> Result<Runtime, OpError> {
        let settings = Arc::new(Settings {
            cdh_enabled: settings.cdh_enabled || settings.cdh.is_some(),
            ..settings
        });
        let registry = Arc::new(Registry::default());
        let hub = Hub::default();
        let supervisor = Arc::new(
            SupervisorHandle::spawn(SupervisorArgs {
                store: store.clone(),
                settings: settings.clone(),
                registry: registry.clone(),
                hub: hub.clone(),
            })
            .await?,
        );
        let cdh = Cdh::start(store.clone(), &settings, hub.clone()).await?;
        let durable = registry.clone();
        let event_log = EventLog::new(
            store.clone(),
            settings.events_retain,
            Arc::new(move |scope_id| {
                durable
                    .get(scope_id)
                    .map_or(u64::MAX, |scope| scope.status.durable_seq.get())
            }),
        );
        let client = Arc::new(ScopeClient::new(store, settings, registry));
        let members = Arc::new(Members::new(client.clone()));
        let provisioner = Provisioner::new(client.clone(), members.clone())?;
        let directory = Arc::new(Directory::new(
            client.clone(),
            supervisor.clone(),
            provisioner.clone(),
        ));
        let runtime = Runtime {
            reshape: Reshape::new(client.clone(), supervisor.clone(), directory.clone()),
            imports: Imports::new(client.clone()),
            client,
            supervisor,
            hub,
            members,
            directory,
            cdh,
            provisioner,
            event_log,
        };
        runtime.imports.resume().await?;
        runtime.provisioner.start();
        Ok(runtime)
    }

    /// Stops every actor (each scope commits what it handled) and flushes the store.
    pub async fn shutdown(&self) -> Result<(), OpError> {
        self.provisioner.stop();
        self.cdh.stop().await;
        self.imports.stop_all().await;
        self.members.stop_all().await;
        self.supervisor.stop().await;
        // A scope that failed or was killed rather than stopped may still have a commit lane
        // writing what it was handed, or a snapshot task: the last flush comes after them.
        for (_, status) in self.client.statuses() {
            status.stopping.store(true, Ordering::Release);
            let _ = status.lane_lock.clone().lock_owned().await;
            let _ = status.snapshot_lock.clone().lock_owned().await;
        }
        self.store().flush_async().await?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        self.client.store()
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn settings(&self) -> &Settings {
        self.client.settings()
    }

    /// Returns the reads of retained events.
    pub fn event_log(&self) -> &EventLog {
        &self.event_log
    }

    // ----------------------------------------------------------------------------------------
    // Readiness.

    /// Returns whether the store can write and every scope actor is running (none failed,
    /// none restarting).
    pub fn is_ready(&self) -> bool {
        self.store().health() == Health::Ok && self.client.all_running()
    }

    /// Returns the ids of scopes marked failed.
    pub fn failed_scopes(&self) -> Vec<Id> {
        self.client
            .statuses()
            .into_iter()
            .filter(|(_, s)| s.failed.load(Ordering::Acquire))
            .map(|(id, _)| id)
            .collect()
    }

    /// Returns the status of every running (or failed) scope, by scope id.
    pub fn scope_statuses(&self) -> Vec<(Id, Arc<ScopeStatus>)> {
        self.client.statuses()
    }

    /// Returns the status of a scope.
    pub fn scope_status(&self, scope_id: Id) -> Option<Arc<ScopeStatus>> {
        self.client.status(scope_id)
    }

    /// Returns the scope of an org.
    pub fn scope_of(&self, org_id: Id) -> Result<Id, OpError> {
        self.client.scope_of(org_id)
    }

    /// Returns whether the org's scope has no pending unification work.
    pub fn scope_merge_state(&self, org_id: Id) -> Result<bool, OpError> {
        let scope_id = self.client.scope_of(org_id)?;
        Ok(self.client.entry(scope_id)?.status.is_finished())
    }

    /// Makes a scope actor panic (supervision tests).
    #[doc(hidden)]
    pub fn inject_panic(&self, org_id: Id) -> Result<(), OpError> {
        self.client.send(org_id, ScopeMsg::Panic)
    }

    /// Fails a running import job as its driver does when it gives up (import tests).
    #[doc(hidden)]
    pub async fn inject_import_failure(
        &self,
        org_id: Id,
        job_id: Id,
        reason: &str,
    ) -> Result<(), OpError> {
        let reason = reason.to_owned();
        let build = |reply| ScopeMsg::FailImport {
            org_id,
            job_id,
            reason,
            reply,
        };
        self.client.call_admitted(org_id, true, build).await
    }

    /// Kills the org's scope actor (supervision tests): it is restarted from the store.
    #[doc(hidden)]
    pub fn inject_kill(&self, org_id: Id) -> Result<(), OpError> {
        self.client.kill(org_id)
    }

    // ----------------------------------------------------------------------------------------
    // Members (see `members.rs`) and imports (see `import.rs`).

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
        self.imports.start(org_id, body).await
    }

    /// Returns an import job of the org (`GET /imports/:job_id`); `NotFound` for a job of
    /// another org.
    pub fn import_status(&self, org_id: Id, job_id: Id) -> Result<ImportJob, OpError> {
        self.imports.status(org_id, job_id)
    }

    /// See [`Members::create_member`].
    pub async fn create_member(
        &self,
        org_id: Id,
        member: NewMember,
    ) -> Result<(Member, bool), OpError> {
        self.members.create_member(org_id, member).await
    }

    /// Runs `work` in the actor of one identity `(org, channel, external_member_id)`, after
    /// the creates and provisionings of that identity queued before it, and returns its
    /// result. `work` gets an [`IdentityHandle`] with `find`, `get_or_create` and `mutate`
    /// (the latter through the member's own actor), and may do slow work without blocking the
    /// scope. Admitted like a mutation of the org's scope.
    pub async fn with_identity<T, F, Fut>(&self, identity: Identity, work: F) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: FnOnce(IdentityHandle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, OpError>> + Send + 'static,
    {
        self.members.with_identity(identity, work).await
    }

    /// Creates many members in one scope call (bulk import).
    pub async fn import_members(
        &self,
        org_id: Id,
        members: Vec<NewMember>,
    ) -> Result<Vec<Result<Member, OpError>>, OpError> {
        self.members.import_members(org_id, members).await
    }

    /// Applies an operation to a member through its member actor; `None` after a delete.
    pub async fn member_op(
        &self,
        org_id: Id,
        member_id: Id,
        op: MemberOp,
    ) -> Result<Option<Member>, OpError> {
        self.members.member_op(org_id, member_id, op).await
    }

    /// See [`Members::get_member`].
    pub async fn get_member(&self, org_id: Id, member_id: Id) -> Result<Member, OpError> {
        self.members.get_member(org_id, member_id).await
    }

    /// Lists an org's members by ascending id (read from the store: paging needs no actor).
    pub async fn list_members(
        &self,
        org_id: Id,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, OpError> {
        self.members.list_members(org_id, after, limit).await
    }

    /// See [`Members::find_members`].
    pub async fn find_members(
        &self,
        org_id: Id,
        channel_id: Option<Id>,
        external_member_id: Option<&str>,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, OpError> {
        self.members
            .find_members(org_id, channel_id, external_member_id, after, limit)
            .await
    }

    /// Returns the other members of the member's profile with their channels.
    pub async fn unification(
        &self,
        org_id: Id,
        member_id: Id,
    ) -> Result<Vec<(Member, Option<Channel>)>, OpError> {
        self.members.unification(org_id, member_id).await
    }

    pub async fn profile(&self, org_id: Id, member_id: Id) -> Result<ProfileView, OpError> {
        self.members.profile(org_id, member_id).await
    }

    pub async fn explain(
        &self,
        org_id: Id,
        member_id: Id,
        other: Id,
    ) -> Result<Explanation, OpError> {
        self.members.explain(org_id, member_id, other).await
    }

    /// Lists the org's members holding the key node `(attribute, normalize(value))`.
    pub async fn find_by_key(
        &self,
        org_id: Id,
        attribute: Attribute,
        value: String,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, OpError> {
        self.members
            .find_by_key(org_id, attribute, value, after, limit)
            .await
    }

    /// Returns the graph of the member's cluster, at most `max_members` members.
    pub async fn graph(
        &self,
        org_id: Id,
        member_id: Id,
        max_members: usize,
    ) -> Result<MemberGraph, OpError> {
        self.members.graph(org_id, member_id, max_members).await
    }

    /// Returns whether no operation on the member is queued or running.
    pub async fn member_merge_state(&self, org_id: Id, member_id: Id) -> Result<bool, OpError> {
        self.members.member_merge_state(org_id, member_id).await
    }

    // ----------------------------------------------------------------------------------------
    // Unify settings: one admitted call of the org's scope each.

    pub async fn setting(&self, org_id: Id) -> Result<ScopeRecord, OpError> {
        let build = |reply| ScopeMsg::Setting { reply };
        self.client.call_admitted(org_id, false, build).await
    }

    /// Replaces the org's scope keys and schedules re-unification; returns the new setting.
    pub async fn set_keys(&self, org_id: Id, keys: Vec<UnifyKey>) -> Result<ScopeRecord, OpError> {
        self.change_keys(org_id, KeyChange::Set(keys)).await
    }

    /// Applies a key change to the org's scope (its preconditions are checked in the scope
    /// actor) and schedules re-unification; returns the new setting.
    pub async fn change_keys(&self, org_id: Id, change: KeyChange) -> Result<ScopeRecord, OpError> {
        let build = |reply| ScopeMsg::SetKeys { change, reply };
        self.client.call_admitted(org_id, true, build).await
    }

    pub async fn dry_run(&self, org_id: Id, keys: KeySet) -> Result<DryRun, OpError> {
        let build = |reply| ScopeMsg::DryRun { keys, reply };
        self.client.call_admitted(org_id, false, build).await
    }

    pub async fn hot_values(&self, org_id: Id) -> Result<Vec<HotValue>, OpError> {
        let build = |reply| ScopeMsg::HotValues { reply };
        self.client.call_admitted(org_id, false, build).await
    }

    // ----------------------------------------------------------------------------------------
    // Directory (see `directory.rs`) and re-shaping (see `reshape.rs`).

    pub fn account(&self, account_id: Id) -> Result<Account, OpError> {
        self.directory.account(account_id)
    }

    pub fn org(&self, org_id: Id) -> Result<Org, OpError> {
        self.directory.org(org_id)
    }

    /// See [`Directory::account_caac_org`].
    pub fn account_caac_org(&self, account_id: Id) -> Result<Org, OpError> {
        self.directory.account_caac_org(account_id)
    }

    /// Returns the account's orgs by ascending id.
    pub fn orgs_of_account(&self, account_id: Id) -> Result<Vec<Org>, OpError> {
        self.directory.orgs_of_account(account_id)
    }

    /// Returns a channel of the org (`NotFound` for a channel of another org).
    pub fn channel(&self, org_id: Id, channel_id: Id) -> Result<Channel, OpError> {
        self.directory.channel(org_id, channel_id)
    }

    /// Returns the org's channels by ascending id.
    pub fn channels(&self, org_id: Id) -> Result<Vec<Channel>, OpError> {
        self.directory.channels(org_id)
    }

    pub async fn create_account(&self, name: &str) -> Result<Account, OpError> {
        self.directory.create_account(name).await
    }

    /// Creates an org in a new scope of its own and starts that scope.
    pub async fn create_org(
        &self,
        account_id: Id,
        source: Source,
        name: &str,
        uuid: Option<String>,
    ) -> Result<Org, OpError> {
        self.directory
            .create_org(account_id, source, name, uuid)
            .await
    }

    /// Creates a channel of a caac org; the webhook secret is in the returned record only.
    pub async fn create_channel(&self, org_id: Id, new: NewChannel) -> Result<Channel, OpError> {
        self.directory.create_channel(org_id, new).await
    }

    /// Updates a channel's settings and returns it.
    pub async fn update_channel(
        &self,
        org_id: Id,
        channel_id: Id,
        patch: ChannelPatch,
    ) -> Result<Channel, OpError> {
        self.directory
            .update_channel(org_id, channel_id, patch)
            .await
    }

    /// See [`Reshape::integrate`].
    pub async fn integrate(
        &self,
        account_id: Id,
        keys: impl Into<KeyChange>,
    ) -> Result<ScopeRecord, OpError> {
        self.reshape.integrate(account_id, keys).await
    }

    /// See [`Reshape::disconnect`].
    pub async fn disconnect(&self, account_id: Id) -> Result<(), OpError> {
        self.reshape.disconnect(account_id).await
    }

    // ----------------------------------------------------------------------------------------
    // Channel events (see `provision.rs`) and the CDH bridge (see `bridge.rs`).

    /// See [`Provisioner::accept_event`].
    pub async fn accept_event(
        &self,
        channel: &Channel,
        event: ChannelEvent,
    ) -> Result<Acceptance, OpError> {
        self.provisioner.accept_event(channel, event).await
    }

    /// See [`Provisioner::create_link_code`].
    pub async fn create_link_code(&self, org_id: Id, member_id: Id) -> Result<LinkCode, OpError> {
        self.provisioner.create_link_code(org_id, member_id).await
    }

    /// Returns the CDH delivery state of the account scope (the scope of the account's caac
    /// org). `NotFound` for an unknown account; `MISSING_ORGANIZATION` when it has no caac org.
    pub async fn sync_state(&self, account_id: Id) -> Result<SyncState, OpError> {
        let scope_id = self.directory.account_scope(account_id)?;
        self.cdh.sync_state(scope_id).await
    }

    /// Requeues the account scope's dead-lettered events (see [`Cdh::sync_retry`]). Errors
    /// as [`Runtime::sync_state`].
    pub async fn sync_retry(&self, account_id: Id) -> Result<u64, OpError> {
        let scope_id = self.directory.account_scope(account_id)?;
        self.cdh.sync_retry(scope_id).await
    }

    /// Makes the CDH bridge (`None`) or the delivery actor of a scope panic (supervision
    /// tests); `Unavailable` when no bridge runs.
    #[doc(hidden)]
    pub async fn inject_bridge_panic(&self, scope_id: Option<Id>) -> Result<(), OpError> {
        self.cdh.inject_panic(scope_id).await
    }
}
