//! The members service: creates, operations and reads of an org's members, and the
//! profile questions about them (unification, profile, explain).
//!
//! Creates run in the identity's actor and operations in the member's actor (see
//! `member.rs`); reads are answered by the store when that is provably durable, else by the
//! scope. It owns the member and identity actors. It may call the scope client and the
//! member actors; it imports no other service.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use unify_storage::{Channel, Id, Member};

use crate::engine::Explanation;
use crate::error::{OpError, found};
use crate::events::Reason;
use crate::member::{Identity, IdentityHandle, MemberRegistry};
use crate::ops::{MemberOp, NewMember};
use crate::protocol::{ProfileView, ScopeMsg};
use crate::scope_client::ScopeClient;

/// Members of the orgs, through their actors and scopes.
#[derive(Debug)]
pub struct Members {
    client: Arc<ScopeClient>,
    /// The live member and identity actors.
    actors: Arc<MemberRegistry>,
}

impl Members {
    pub fn new(client: Arc<ScopeClient>) -> Members {
        Members {
            client,
            actors: Arc::default(),
        }
    }

    /// Stops every member and identity actor.
    pub async fn stop_all(&self) {
        self.actors.stop_all().await;
    }

    /// Creates a member, or returns the existing one (`false`) with the same identity. The
    /// create runs in the identity's actor, so concurrent identical creates make one member.
    pub async fn create_member(
        &self,
        org_id: Id,
        member: NewMember,
    ) -> Result<(Member, bool), OpError> {
        let identity = Identity {
            org_id,
            channel_id: member.channel_id,
            external_member_id: member.external_member_id.clone(),
        };
        self.with_identity(identity, move |handle| async move {
            handle.get_or_create(member, Reason::MemberCreated).await
        })
        .await
    }

    /// Runs `work` in the actor of one identity, admitted like a mutation of the org's scope
    /// (see [`Members::run_in_identity`]).
    pub async fn with_identity<T, F, Fut>(&self, identity: Identity, work: F) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: FnOnce(IdentityHandle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, OpError>> + Send + 'static,
    {
        let scope_id = self.client.scope_of(identity.org_id)?;
        let _admission = self.client.admit(scope_id, true)?;
        self.run_in_identity(identity, work).await
    }

    /// Runs `work` in the actor of one identity `(org, channel, external_member_id)`, after
    /// the creates and provisionings of that identity queued before it, and returns its
    /// result; not admitted (provisioning counts its own pending work).
    pub async fn run_in_identity<T, F, Fut>(
        &self,
        identity: Identity,
        work: F,
    ) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: FnOnce(IdentityHandle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, OpError>> + Send + 'static,
    {
        self.actors.run(&self.client, identity, work).await
    }

    /// Creates many members in one scope call (bulk import).
    pub async fn import_members(
        &self,
        org_id: Id,
        members: Vec<NewMember>,
    ) -> Result<Vec<Result<Member, OpError>>, OpError> {
        self.client
            .call_admitted(org_id, true, |reply| ScopeMsg::CreateMany {
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
        let scope_id = self.client.scope_of(org_id)?;
        // A member actor is spawned only for a member of the org: ids that name nothing (or
        // another org's member) are refused before they cost an actor.
        self.stored_member_of(org_id, member_id)?;
        let _admission = self.client.admit(scope_id, true)?;
        self.actors.send(&self.client, member_id, org_id, op).await
    }

    /// Reads a member. When no commit of its scope is under way the durable store answers
    /// directly, so reads stay fast while the scope actor is busy (a job, an import); otherwise
    /// the scope actor answers once the pending batch is durable.
    pub async fn get_member(&self, org_id: Id, member_id: Id) -> Result<Member, OpError> {
        if let Some(result) = self.read_member_directly(org_id, member_id)? {
            return result;
        }
        self.client
            .call_admitted(org_id, false, |reply| ScopeMsg::GetMember {
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
        let scope_id = self.client.scope_of(org_id)?;
        let status = self.client.entry(scope_id)?.status;
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
        match found(self.client.store().get_member(member_id), "member")? {
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
        self.find_members(org_id, None, None, after, limit)
    }

    /// Lists an org's members by ascending id after `after`: all of them, those of one channel,
    /// or the one with an identity (`external_member_id`, on `channel_id` or without one).
    pub fn find_members(
        &self,
        org_id: Id,
        channel_id: Option<Id>,
        external_member_id: Option<&str>,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, OpError> {
        let store = self.client.store();
        found(store.get_org(org_id), "organization")?;
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

    /// Returns the other members of the member's profile with their channels.
    pub async fn unification(
        &self,
        org_id: Id,
        member_id: Id,
    ) -> Result<Vec<(Member, Option<Channel>)>, OpError> {
        let members = self
            .client
            .call_admitted(org_id, false, |reply| ScopeMsg::Unification {
                org_id,
                member_id,
                reply,
            })
            .await?;
        let store = self.client.store();
        members
            .into_iter()
            .map(|m| {
                let channel = match m.channel_id {
                    Some(id) => Some(found(store.get_channel(id), "channel")?),
                    None => None,
                };
                Ok((m, channel))
            })
            .collect()
    }

    pub async fn profile(&self, org_id: Id, member_id: Id) -> Result<ProfileView, OpError> {
        self.client
            .call_admitted(org_id, false, |reply| ScopeMsg::Profile {
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
        self.client
            .call_admitted(org_id, false, |reply| ScopeMsg::Explain {
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
        Ok(self.actors.queued(member_id).await == 0)
    }
}
