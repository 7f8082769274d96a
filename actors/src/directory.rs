//! Directory reads and channel settings: accounts, orgs and channels, read from the store
//! (they change rarely and need no actor).

use unify_storage::{Account, Channel, ContactApi, Id, Org, Source, WriteBatch};

use crate::clock::now_millis;
use crate::error::{Code, OpError, found};
use crate::runtime::Runtime;

/// A partial update of a channel's settings: `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPatch {
    pub name: Option<String>,
    /// `Some(None)` clears the tenant key.
    pub tenant_key: Option<Option<String>>,
    pub auto_provision: Option<bool>,
    /// `Some(None)` removes the contact API.
    pub contact_api: Option<Option<ContactApi>>,
}

impl Runtime {
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

    /// Returns the account's orgs by ascending id.
    pub fn orgs_of_account(&self, account_id: Id) -> Result<Vec<Org>, OpError> {
        self.account(account_id)?;
        Ok(self.store().orgs_of_account(account_id)?)
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

    /// Updates a channel's settings and returns it.
    pub async fn update_channel(
        &self,
        org_id: Id,
        channel_id: Id,
        patch: ChannelPatch,
    ) -> Result<Channel, OpError> {
        let patch = self.settle_channel_patch(org_id, channel_id, patch).await?;
        let _admin = self.admin.lock().await;
        let mut channel = self.channel(org_id, channel_id)?;
        if let Some(name) = patch.name {
            if name.trim().is_empty() {
                return Err(OpError::invalid("name must not be empty"));
            }
            channel.name = name;
        }
        if let Some(tenant_key) = patch.tenant_key {
            channel.tenant_key = tenant_key;
        }
        if let Some(auto_provision) = patch.auto_provision {
            channel.auto_provision = auto_provision;
        }
        if let Some(contact_api) = patch.contact_api {
            channel.contact_api = contact_api;
        }
        channel.updated_at = now_millis();
        crate::provision::check_channel(&channel)?;
        let mut batch = WriteBatch::new();
        batch.put_channel(&channel);
        self.store().apply(batch)?;
        self.store().flush_async().await?;
        Ok(channel)
    }
}

impl Runtime {
    /// Lists an org's members by ascending id after `after`: all of them, those of one channel,
    /// or the one with an identity (`external_member_id`, on `channel_id` or without one).
    pub fn find_members(
        &self,
        org_id: Id,
        channel_id: Option<Id>,
        external_member_id: Option<&str>,
        after: Id,
        limit: usize,
    ) -> Result<Vec<unify_storage::Member>, OpError> {
        self.org(org_id)?;
        let store = self.store();
        if let Some(ext) = external_member_id {
            let Some(id) = store.lookup_member_by_ext(org_id, channel_id, ext)? else {
                return Ok(Vec::new());
            };
            let member = found(store.get_member(id), "member")?;
            return Ok(if member.id > after {
                vec![member]
            } else {
                Vec::new()
            });
        }
        let Some(channel_id) = channel_id else {
            return Ok(store.members_of_org_page(org_id, after, limit)?);
        };
        let mut found_members = Vec::new();
        let mut cursor = after;
        loop {
            let page = store.members_of_org_page(org_id, cursor, limit.max(256))?;
            let Some(last) = page.last() else {
                return Ok(found_members);
            };
            cursor = last.id;
            for member in page {
                if member.channel_id == Some(channel_id) {
                    found_members.push(member);
                    if found_members.len() == limit {
                        return Ok(found_members);
                    }
                }
            }
        }
    }
}
