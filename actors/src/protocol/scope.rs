//! The messages of the scope actor and the payloads its replies carry.
//!
//! A leaf below the actors: it names the payload types of the other protocol modules and
//! the engine's results, never an actor or a service.

use std::sync::Arc;

use unify_storage::{EventBlockSpan, Id, Member, ScopeRecord};

use super::Reply;
use super::import::ImportChunk;
use super::provision::{EventProfile, Provisioned, Redemption, Sender};
use crate::engine::{Attribute, ClusterGraph, DryRun, Explanation, HotValue, KeySet, MergedView};
use crate::error::OpError;
use crate::events::Reason;
use crate::key_change::KeyChange;
use crate::ops::{MemberOp, NewMember};
use crate::roster::MemberView;

/// The unified profile of a member (SPEC 2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileView {
    pub profile_id: Id,
    pub unify_scope_id: Id,
    pub member_ids: Vec<Id>,
    pub view: MergedView,
}

/// The drawable graph of a member's cluster, with the records of the members it shows (in the
/// graph's order).
#[derive(Debug, Clone)]
pub struct MemberGraph {
    pub graph: ClusterGraph,
    pub members: Vec<Member>,
}

/// Messages of the scope actor.
#[derive(Debug)]
pub enum ScopeMsg {
    /// Creates a member, or returns the existing one with the same identity (`bool`: created).
    Create {
        org_id: Id,
        member: NewMember,
        reason: Reason,
        reply: Reply<(Member, bool)>,
    },
    /// Creates many members (bulk import); one result per member, in order.
    CreateMany {
        org_id: Id,
        members: Vec<NewMember>,
        reply: Reply<Vec<Result<Member, OpError>>>,
    },
    /// Applies one chunk of a bulk import with its job record in one atomic write, and
    /// answers with the job record after it (see `import.rs`).
    ImportChunk {
        org_id: Id,
        chunk: Arc<ImportChunk>,
        reply: Reply<unify_storage::ImportJob>,
    },
    /// Marks a running import job failed, durably, with the reason (its driver gave up). Goes
    /// through the scope so that the job as the scope holds it, ahead of the store, fails too.
    FailImport {
        org_id: Id,
        job_id: Id,
        reason: String,
        reply: Reply<()>,
    },
    /// Applies an operation to an existing member; `None` after a delete.
    Mutate {
        org_id: Id,
        member_id: Id,
        op: MemberOp,
        reply: Reply<Option<Member>>,
    },
    GetMember {
        org_id: Id,
        member_id: Id,
        reply: Reply<Member>,
    },
    /// The member holding an identity: `(org, channel, external_member_id)`.
    FindIdentity {
        org_id: Id,
        channel_id: Option<Id>,
        external_member_id: String,
        reply: Reply<Option<Member>>,
    },
    /// The other members of the member's profile, ascending.
    Unification {
        org_id: Id,
        member_id: Id,
        reply: Reply<Vec<Member>>,
    },
    Profile {
        org_id: Id,
        member_id: Id,
        reply: Reply<ProfileView>,
    },
    Explain {
        org_id: Id,
        member_id: Id,
        other: Id,
        reply: Reply<Explanation>,
    },
    /// The org's members holding the key node `(attribute, normalize(value))`, ascending,
    /// after `after`, at most `limit`.
    KeyHolders {
        org_id: Id,
        attribute: Attribute,
        value: String,
        after: Id,
        limit: usize,
        reply: Reply<Vec<Member>>,
    },
    /// The graph of the member's cluster, at most `max_members` members.
    Graph {
        org_id: Id,
        member_id: Id,
        max_members: usize,
        reply: Reply<MemberGraph>,
    },
    DryRun {
        keys: KeySet,
        reply: Reply<DryRun>,
    },
    HotValues {
        reply: Reply<Vec<HotValue>>,
    },
    Setting {
        reply: Reply<ScopeRecord>,
    },
    /// Replaces the unify keys (priority order) and schedules the re-unification job.
    SetKeys {
        change: KeyChange,
        reply: Reply<ScopeRecord>,
    },
    /// Commits the pending batch (sent by the actor to itself).
    Flush,
    /// Writes the next chunk of a scope-wide job (sent by the actor to itself).
    JobChunk,
    /// A background snapshot of an org's members finished (sent by its task).
    SnapshotDone {
        org_id: Id,
        result: Result<unify_storage::SnapshotManifest, String>,
    },
    /// A batch handed to the commit lane is durable and answered (sent by the lane): per org
    /// its journal record's seq and size, its event block, the members it left.
    Committed {
        journaled: Vec<(Id, u64, u64)>,
        block: Option<EventBlockSpan>,
        view: Arc<MemberView>,
    },
    /// The commit lane could not write a batch (sent by the lane): the actor fails, to be
    /// restarted from the store.
    CommitFailed {
        error: String,
    },
    /// Finds or creates a channel sender's member and enriches it (SPEC 6).
    Provision {
        sender: Sender,
        profile: Option<EventProfile>,
        reply: Reply<Provisioned>,
    },
    /// Redeems a link code for a channel sender (SPEC 6).
    RedeemLinkCode {
        sender: Sender,
        code: String,
        reply: Reply<Redemption>,
    },
    /// Makes the actor panic, for supervision tests.
    #[doc(hidden)]
    Panic,
}
