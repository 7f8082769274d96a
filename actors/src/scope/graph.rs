//! The scope actor's answers about key nodes: the members holding one (find by key value,
//! SPEC 4.4) and the drawable graph of a member's cluster (SPEC 4.5). Both read the engine's
//! in-memory index; nothing is written.

use unify_storage::{Id, Member};

use super::ScopeState;
use crate::engine::Attribute;
use crate::error::OpError;
use crate::protocol::MemberGraph;

impl ScopeState {
    /// Returns the org's members holding the key node `(attribute, normalize(raw))`,
    /// ascending, after `after`, at most `limit`; a value that does not link finds nothing.
    pub(super) fn key_holders(
        &self,
        org_id: Id,
        attribute: Attribute,
        raw: &str,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, OpError> {
        let Some(value) = self.settings.normalizer.normalize(attribute, raw) else {
            return Ok(Vec::new());
        };
        self.unifier
            .holders_of(attribute, &value)
            .into_iter()
            .filter(|&id| id > after)
            .filter(|&id| self.roster.get(id).is_some_and(|e| e.org_id() == org_id))
            .take(limit)
            .map(|id| self.member(id))
            .collect()
    }

    /// Returns the graph of the member's cluster. A member of the scope's other org (after
    /// integrate) is shown only when it shares the member's profile, as `explain` does.
    pub(super) fn graph(
        &self,
        org_id: Id,
        member_id: Id,
        max_members: usize,
    ) -> Result<MemberGraph, OpError> {
        self.visible_member(org_id, member_id)?;
        let profile_id = self.unifier.profile_of(member_id);
        let visible = |id: Id, profile: Id| {
            Some(profile) == profile_id || self.roster.get(id).is_some_and(|e| e.org_id() == org_id)
        };
        let graph = self
            .unifier
            .cluster_graph(member_id, max_members, visible)
            .ok_or(OpError::NotFound("member"))?;
        let members = graph
            .members
            .iter()
            .map(|&(id, _)| self.member(id))
            .collect::<Result<_, _>>()?;
        Ok(MemberGraph { graph, members })
    }
}
