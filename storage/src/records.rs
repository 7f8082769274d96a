//! Domain records persisted by the store.
//!
//! Every record is plain data (no `#[serde(skip_serializing_if)]`, no untagged enums) because
//! bincode is not self-describing. Timestamps are unix milliseconds (UTC); the HTTP layer
//! formats them as RFC 3339.

use serde::{Deserialize, Serialize};

/// Global id of any record kind. Ids are allocated by [`crate::Store::allocate_ids`] and start at 1.
pub type Id = u64;

/// Milliseconds since the unix epoch, UTC.
pub type Millis = i64;

/// The product an organization belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Source {
    /// The chat product; its members belong to channels.
    Caac,
    /// The marketing product; its members have no channel.
    Maac,
}

impl Source {
    /// Returns the wire name (`caac` or `maac`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Caac => "caac",
            Source::Maac => "maac",
        }
    }
}

/// A company using the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: Id,
    pub name: String,
    pub uuid: String,
    pub created_at: Millis,
}

/// An organization: one product of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: Id,
    pub account_id: Id,
    pub source: Source,
    pub name: String,
    pub uuid: String,
    /// The unify scope the org currently belongs to.
    pub scope_id: Id,
    pub created_at: Millis,
}

/// The connection to a channel's contact API, used to fetch profiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactApi {
    pub url: String,
    /// Bearer token; never returned by the API after creation.
    pub token: String,
}

/// A chat channel of a caac organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: Id,
    pub org_id: Id,
    pub name: String,
    /// One of `line`, `fb`, `instagram`, `whatsapp`, `feishu`, `webchat`, `other`.
    pub channel_type: String,
    pub tenant_key: Option<String>,
    pub auto_provision: bool,
    pub contact_api: Option<ContactApi>,
    /// HMAC secret of the channel's webhook; returned once, by channel creation.
    pub webhook_secret: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One identity on one channel (or in the maac product).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: Id,
    pub org_id: Id,
    pub source: Source,
    /// `None` for maac members.
    pub channel_id: Option<Id>,
    pub external_member_id: String,
    pub original_name: Option<String>,
    pub display_name: Option<String>,
    pub username: Option<String>,
    pub display_email: Option<String>,
    pub display_mobile: Option<String>,
    pub custom_id: Option<String>,
    pub line_id: Option<String>,
    pub connect_id: Option<String>,
    /// Operator decisions lock the unify-key attributes against automatic enrichment.
    pub manual_unification: bool,
    /// The member's unified profile id (smallest member id of the profile). Derived from the
    /// partition by the scope, never stored (written as 0).
    pub profile_id: Id,
    pub last_message_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Member {
    /// Returns a member with its identity only: no names, no unify-key values, not locked, in
    /// a profile of its own, created and updated at `now`.
    pub fn new(
        id: Id,
        org_id: Id,
        source: Source,
        channel_id: Option<Id>,
        external_member_id: String,
        now: Millis,
    ) -> Member {
        Member {
            id,
            org_id,
            source,
            channel_id,
            external_member_id,
            original_name: None,
            display_name: None,
            username: None,
            display_email: None,
            display_mobile: None,
            custom_id: None,
            line_id: None,
            connect_id: None,
            manual_unification: false,
            profile_id: id,
            last_message_at: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A member's linking values as its scope normalized them, stored with the member
/// ([`crate::StoredMember`]) so that loading a scope does not re-run normalization
/// (phone-number parsing dominates it). A cache keyed by the normalizer's fingerprint, not
/// derived state: values under another fingerprint are recomputed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberLinks {
    /// Fingerprint of the normalizer configuration (region, blocked values and patterns) that
    /// produced `values`. Values under another fingerprint are stale and recomputed.
    pub normalizer: u64,
    /// One value per engine attribute, in the engine's attribute order; `None` does not link.
    pub values: Vec<Option<String>>,
}

/// One unify key of a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnifyKeyRecord {
    pub id: Id,
    /// One of `display_email`, `display_mobile`, `custom_id`, `line_id`, `connect_id`,
    /// `external_member_id`.
    pub attribute: String,
    pub is_distinct: bool,
}

/// What kind of scope-wide recomputation a pending job performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// The unify keys changed.
    KeysChanged,
    /// A caac and a maac org were joined into this scope.
    Integrate,
    /// This scope was split from a connected scope.
    Disconnect,
    /// A hot value crossed `max_members_per_value`.
    HotValue,
    /// A bulk import finished loading members.
    Import,
}

/// A scope-wide recomputation that has been scheduled and whose result is not yet durable.
/// Stored on the scope so that it resumes after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJob {
    pub kind: JobKind,
    pub scheduled_at: Millis,
}

/// A unify scope: the orgs whose members unify together, with ordered keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRecord {
    pub id: Id,
    /// Orgs of the scope, ascending.
    pub org_ids: Vec<Id>,
    /// Keys in priority order. At most one is distinct.
    pub keys: Vec<UnifyKeyRecord>,
    /// Seq of the last event written for this scope (0 when none).
    pub last_seq: u64,
    pub pending_job: Option<PendingJob>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl ScopeRecord {
    /// Returns the attribute of the distinct key, if the scope has one.
    pub fn distinct_key(&self) -> Option<&str> {
        self.keys
            .iter()
            .find(|k| k.is_distinct)
            .map(|k| k.attribute.as_str())
    }
}

/// One event of a scope's log (websocket frames and CDH deliveries). `payload` is the JSON
/// text of the frame, so the log never needs to be re-rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub scope_id: Id,
    pub seq: u64,
    pub payload: String,
}

/// An event waiting for delivery to the CDH, or dead-lettered after permanent failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub scope_id: Id,
    pub seq: u64,
    pub payload: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// The CDH delivery state of one scope, written by the bridge in the same batch as the outbox
/// entries it removes or updates.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub scope_id: Id,
    /// Events delivered (acknowledged with a 2xx) since the scope was created.
    pub delivered: u64,
    pub last_delivered_at: Option<Millis>,
    /// Error of the last failed attempt; cleared by the next successful delivery.
    pub last_error: Option<String>,
    /// Seqs `(first, last)` of the batch being delivered. Kept so that a retry, also after a
    /// restart, resends exactly the same events under the same idempotency key.
    pub batch: Option<(u64, u64)>,
    /// Permanent (non-retryable) rejections of that batch; it is dead-lettered at the limit.
    pub rejections: u32,
}

/// Where a bulk import stands (`GET /imports/:job_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImportStatus {
    /// Lines remain to be applied; the job resumes after a restart.
    Running,
    /// Every line was applied or counted as failed.
    Finished,
    /// The job stopped before the end (its spool was lost or its org is gone).
    Failed,
}

impl ImportStatus {
    /// Returns the wire name (`running`, `finished` or `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Running => "running",
            ImportStatus::Finished => "finished",
            ImportStatus::Failed => "failed",
        }
    }
}

/// One refused line of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportLineError {
    /// 1-based line number in the uploaded body.
    pub line: u64,
    /// API error code (`MALFORMED_JSON`, `INVALID_ARGUMENT`, `EMPTY_EXTERNAL_ID`, ...).
    pub code: String,
    pub message: String,
}

/// A bulk import job. Written in the same atomic batch as each chunk of members it creates,
/// so that `position` says exactly which lines are applied and a resumed job applies every
/// line once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJob {
    pub id: Id,
    pub org_id: Id,
    pub status: ImportStatus,
    /// Non-empty lines in the body.
    pub total: u64,
    /// Lines applied: members created, or found already present (idempotent).
    pub done: u64,
    /// Lines refused.
    pub failed: u64,
    /// The first 100 refused lines.
    pub errors: Vec<ImportLineError>,
    /// Bytes of the spooled body consumed so far: the driver resumes reading here.
    pub position: u64,
    /// Lines (empty ones included) consumed so far, for 1-based line numbers after a resume.
    pub lines: u64,
    /// Why the job failed, when it did.
    pub failure: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Kinds of ids handed out by [`crate::Store::allocate_ids`]; each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Account,
    Org,
    Channel,
    Member,
    Scope,
    UnifyKey,
    Job,
}
