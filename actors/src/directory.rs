//! The directory service: accounts, orgs and channels. Reads come from the store (they
//! change rarely and need no actor); writes are serialized by one lock, shared with the
//! re-shaping of scopes (see `reshape.rs`), and flushed before they are answered.
//!
//! It owns that lock. It may call the scope client, the supervisor (an org's new scope is
//! started here) and the provisioner (a channel's tenant key is detected from its contact
//! API); it never imports the runtime.

use std::sync::Arc;

use rand::Rng;
use tokio::sync::{Mutex, MutexGuard};
use unify_storage::{
    Account, Channel, ContactApi, Id, IdKind, Org, ScopeRecord, Source, Store, WriteBatch,
};

pub use crate::channel::ChannelPatch;
use crate::channel::{NewChannel, check_channel};
use crate::clock::now_millis;
use crate::error::{Code, OpError, found};
use crate::provision::Provisioner;
use crate::scope_client::ScopeClient;
use crate::supervisor::SupervisorHandle;

/// Accounts, orgs and channels.
#[derive(Debug)]
pub struct Directory {
    client: Arc<ScopeClient>,
    supervisor: Arc<SupervisorHandle>,
    /// Detects tenant keys through the contact-API client.
    provisioner: Arc<Provisioner>,
    /// Serializes directory writes and scope re-shaping, which are rare.
    admin: Mutex<()>,
}

impl Directory {
    pub fn new(
        client: Arc<ScopeClient>,
        supervisor: Arc<SupervisorHandle>,
        provisioner: Arc<Provisioner>,
    ) -> Directory {
        Directory {
            client,
            supervisor,
            provisioner,
            admin: Mutex::new(()),
        }
    }

    fn store(&self) -> &Store {
        self.client.store()
    }

    /// Takes the lock that serializes directory writes and scope re-shaping.
    pub async fn lock(&self) -> MutexGuard<'_, ()> {
        self.admin.lock().await
    }

    /// Applies a batch and makes it durable.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), OpError> {
        self.store().apply(batch)?;
        self.store().flush_async().await?;
        Ok(())
    }

    pub fn account(&self, account_id: Id) -> Result<Account, OpError> {
        found(self.store().get_account(account_id), "account")
    }

    pub fn org(&self, org_id: Id) -> Result<Org, OpError> {
        found(self.store().get_org(org_id), "organization")
    }

    /// Returns the account's caac org, whose scope is the *account scope* of the Admin
    /// Center; `MISSING_ORGANIZATION` when it has none.
    pub fn account_caac_org(&self, account_id: Id) -> Result<Org, OpError> {
        self.orgs_of_account(account_id)?
            .into_iter()
            .find(|org| org.source == Source::Caac)
            .ok_or_else(|| {
                OpError::conflict(
                    Code::MissingOrganization,
                    "the account has no caac organization",
                )
            })
    }

    /// Returns the account scope: the scope of the account's caac org.
    pub fn account_scope(&self, account_id: Id) -> Result<Id, OpError> {
        Ok(self.account_caac_org(account_id)?.scope_id)
    }

    /// Returns the account's orgs by ascending id.
    pub fn orgs_of_account(&self, account_id: Id) -> Result<Vec<Org>, OpError> {
        self.account(account_id)?;
        Ok(self.store().orgs_of_account(account_id)?)
    }

    /// Returns the account's caac and maac orgs, or `MISSING_ORGANIZATION`.
    pub fn account_orgs(&self, account_id: Id) -> Result<(Org, Org), OpError> {
        let orgs = self.store().orgs_of_account(account_id)?;
        let of = |source| orgs.iter().find(|o| o.source == source).cloned();
        match (of(Source::Caac), of(Source::Maac)) {
            (Some(caac), Some(maac)) => Ok((caac, maac)),
            _ => Err(OpError::conflict(
                Code::MissingOrganization,
                "the account needs a caac and a maac organization",
            )),
        }
    }

    /// Returns a channel of the org (`NotFound` for a channel of another org).
    pub fn channel(&self, org_id: Id, channel_id: Id) -> Result<Channel, OpError> {
        match self.store().get_channel(channel_id) {
            Ok(channel) if channel.org_id == org_id => Ok(channel),
            Ok(_) => Err(OpError::NotFound("channel")),
            Err(e) => found(Err(e), "channel"),
        }
    }

    /// Returns the org's channels by ascending id.
    pub fn channels(&self, org_id: Id) -> Result<Vec<Channel>, OpError> {
        self.org(org_id)?;
        Ok(self.store().channels_of_org(org_id)?)
    }

    pub async fn create_account(&self, name: &str) -> Result<Account, OpError> {
        if name.trim().is_empty() {
            return Err(OpError::invalid("name must not be empty"));
        }
        let _admin = self.lock().await;
        let store = self.store();
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
        let _admin = self.lock().await;
        let store = self.store();
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
        self.supervisor.start_scope(scope_id).await?;
        Ok(org)
    }

    /// Creates a channel of a caac org; the webhook secret is in the returned record only.
    pub async fn create_channel(&self, org_id: Id, new: NewChannel) -> Result<Channel, OpError> {
        let new = self.settle_new_channel(new).await?;
        let _admin = self.lock().await;
        let store = self.store();
        let org = found(store.get_org(org_id), "organization")?;
        if org.source != Source::Caac {
            return Err(OpError::invalid("only caac organizations have channels"));
        }
        new.check_name_and_type()?;
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
        check_channel(&channel)?;
        let mut batch = WriteBatch::new();
        batch.put_channel(&channel);
        self.write(batch).await?;
        Ok(channel)
    }

    /// Updates a channel's settings and returns it.
    pub async fn update_channel(
        &self,
        org_id: Id,
        channel_id: Id,
        patch: ChannelPatch,
    ) -> Result<Channel, OpError> {
        let patch = self.settle_channel_patch(org_id, channel_id, patch).await?;
        let _admin = self.lock().await;
        let mut channel = self.channel(org_id, channel_id)?;
        patch.apply(&mut channel)?;
        channel.updated_at = now_millis();
        check_channel(&channel)?;
        let mut batch = WriteBatch::new();
        batch.put_channel(&channel);
        self.write(batch).await?;
        Ok(channel)
    }

    /// Checks a new channel's settings; an auto-provisioning channel without a tenant key gets
    /// the one its contact API reports.
    async fn settle_new_channel(&self, mut new: NewChannel) -> Result<NewChannel, OpError> {
        new.check_settings()?;
        if new.auto_provision && new.tenant_key.is_none() {
            new.tenant_key = Some(self.detect_tenant(new.contact_api.as_ref()).await?);
        }
        Ok(new)
    }

    /// Checks a channel patch against the channel it changes; when the result auto-provisions
    /// without a tenant key, the patch gets the one its contact API reports.
    async fn settle_channel_patch(
        &self,
        org_id: Id,
        channel_id: Id,
        mut patch: ChannelPatch,
    ) -> Result<ChannelPatch, OpError> {
        let current = self.channel(org_id, channel_id)?;
        patch.check_settings()?;
        if let Some(contact_api) = patch.needs_tenant(&current) {
            let detected = self.detect_tenant(contact_api.as_ref()).await?;
            patch.tenant_key = Some(Some(detected));
        }
        Ok(patch)
    }

    async fn detect_tenant(&self, api: Option<&ContactApi>) -> Result<String, OpError> {
        let Some(api) = api else {
            return Err(OpError::invalid(
                "auto_provision needs a tenant_key, or a contact_api to detect it from",
            ));
        };
        self.provisioner.detect_tenant(api).await.map_err(|e| {
            OpError::invalid(format!(
                "could not detect the tenant_key from the contact API: {e}"
            ))
        })
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
