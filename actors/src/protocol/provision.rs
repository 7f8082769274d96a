//! The payloads of provisioning (SPEC 6) that cross into the scope actor: who sent an event,
//! the profile it carries (or the contact API answered), and what the scope decided.
//!
//! A leaf: it imports no actor and no service.

use serde::{Deserialize, Serialize};
use unify_storage::{AcceptedEvent, Id, Member, Millis};

/// Profile values carried by an event, or fetched from the channel's contact API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventProfile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub display_email: Option<String>,
    #[serde(default)]
    pub display_mobile: Option<String>,
}

/// The sender of an event as the scope provisions it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub org_id: Id,
    pub channel_id: Id,
    /// The channel's type, for the fallback username `<type>-<first 8 chars of the id>`.
    pub channel_type: String,
    pub external_member_id: String,
    pub name: Option<String>,
    pub last_message_at: Option<Millis>,
    /// The accepted webhook event being provisioned: the scope marks it provisioned in the
    /// atomic write that holds its effect, so that a crash never leaves it pending once its
    /// effect is durable (it would be provisioned again after the restart, over whatever was
    /// written to the member since).
    pub event: Option<AcceptedEvent>,
}

/// The member provisioning found or created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub member: Member,
    pub created: bool,
}

/// What redeeming a link code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The sender's member (created if needed) joined the code's member by manual unification.
    Joined {
        member: Box<Member>,
        target: Id,
    },
    /// No such code (or its member is gone, or in another scope).
    Unknown,
    Expired,
    Used,
    /// The code's member holds no value of an editable unify key to join on.
    NoKeyValue,
}

impl Redemption {
    /// Returns the outcome as the metrics label it.
    pub fn label(&self) -> &'static str {
        match self {
            Redemption::Joined { .. } => "joined",
            Redemption::Unknown => "unknown",
            Redemption::Expired => "expired",
            Redemption::Used => "used",
            Redemption::NoKeyValue => "no_key_value",
        }
    }
}
