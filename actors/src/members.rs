//! The members service: creates, operations and reads of an org's members, and the
//! profile questions about them (unification, profile, explain).
//!
//! Creates run in the identity's actor and operations in the member's actor (see
//! `member.rs`); member reads are answered from the scope's published view (see `roster.rs`),
//! profile questions by the scope. It owns the member and identity actors. It may call the scope client and the
//! member actors; it imports no other service.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use unify_storage::{Channel, Id, Member};

use crate::engine::{Attribute, Explanation};
use crate::error::{OpError, found};
use crate::events::Reason;
use crate::member::{Identity, IdentityHandle, MemberRegistry};
use crate::ops::{MemberOp, NewMember};
use crate::protocol::{MemberGraph, ProfileView, ScopeMsg};
use crate::roster::MemberView;
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
        self.get_member(org_id, member_id).await?;
        let _admission = self.client.admit(scope_id, true)?;
        self.actors.send(&self.client, member_id, org_id, op).await
    }

    /// Reads a member from its scope's published view (durable state, no message to the
    /// actor); while the scope loads, the actor answers once it runs.
    pub async fn get_member(&self, org_id: Id, member_id: Id) -> Result<Member, OpError> {
        if let Some(view) = self.view(org_id)? {
            return match view.member(org_id, member_id) {
                Some(member) => Ok(member?),
                None => Err(OpError::NotFound("member")),
            };
        }
        self.client
            .call_admitted(org_id, false, |reply| ScopeMsg::GetMember {
                org_id,
                member_id,
                reply,
            })
            .await
    }

    /// Returns the published member view of the org's scope while its actor runs, or while
    /// it waits for the store to write again (the view holds only durable writes).
    fn view(&self, org_id: Id) -> Result<Option<Arc<MemberView>>, OpError> {
        let scope_id = self.client.scope_of(org_id)?;
        let status = self.client.entry(scope_id)?.status;
        if !status.running.load(Ordering::Acquire)
            && !status.waiting_for_store.load(Ordering::Acquire)
        {
            return Ok(None);
        }
        Ok(status.view.load_full())
    }

    /// Lists an org's members by ascending id.
    pub async fn list_members(
        &self,
        org_id: Id,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, OpError> {
        self.find_members(org_id, None, None, after, limit).await
    }

    /// Lists an org's members by ascending id after `after`: all of them, those of one channel,
    /// or the one with an identity (`external_member_id`, on `channel_id` or without one).
    pub async fn find_members(
        &self,
        org_id: Id,
        channel_id: Option<Id>,
        external_member_id: Option<&str>,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, OpError> {
        found(self.client.store().get_org(org_id), "organization")?;
        if let Some(ext) = external_member_id {
            let external_member_id = ext.to_owned();
            let member = self
                .client
                .call_admitted(org_id, false, |reply| ScopeMsg::FindIdentity {
                    org_id,
                    channel_id,
                    external_member_id,
                    reply,
                })
                .await?;
            return Ok(member.filter(|m| m.id > after).into_iter().collect());
        }
        let view = match self.view(org_id)? {
            Some(view) => view,
            None => self.loaded_view(org_id).await?,
        };
        Ok(view.page(org_id, channel_id, after, limit)?)
    }

    /// Waits for the org's scope to run (any message is answered once it has loaded) and
    /// returns its view.
    async fn loaded_view(&self, org_id: Id) -> Result<Arc<MemberView>, OpError> {
        self.client
            .call_admitted(org_id, false, |reply| ScopeMsg::Setting { reply })
            .await?;
        self.view(org_id)?
            .ok_or_else(|| OpError::Unavailable("the scope is restarting".into()))
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

    /// Lists the org's members holding the key node `(attribute, normalize(value))`
    /// ascending after `after` (SPEC 4.4); a value that does not link finds nothing.
    pub async fn find_by_key(
        &self,
        org_id: Id,
        attribute: Attribute,
        value: String,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, OpError> {
        self.client
            .call_admitted(org_id, false, |reply| ScopeMsg::KeyHolders {
                org_id,
                attribute,
                value,
                after,
                limit,
                reply,
            })
            .await
    }

    /// Returns the graph of the member's cluster, at most `max_members` members (SPEC 4.5).
    pub async fn graph(
        &self,
        org_id: Id,
        member_id: Id,
        max_members: usize,
    ) -> Result<MemberGraph, OpError> {
        self.client
            .call_admitted(org_id, false, |reply| ScopeMsg::Graph {
                org_id,
                member_id,
                max_members,
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
