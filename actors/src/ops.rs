//! Member operations (SPEC 4.4, 4.5, 2.6) as pure transformations of member records.

use unify_storage::{Id, Member, Millis};

use crate::engine::{Attribute, Column, Columns, KeySet};
use crate::error::OpError;
use crate::events::Reason;
use crate::links::attribute_slot;

/// A member to create (`POST /chat/members`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMember {
    pub channel_id: Option<Id>,
    pub external_member_id: String,
    pub original_name: Option<String>,
    pub display_name: Option<String>,
    pub display_email: Option<String>,
    pub display_mobile: Option<String>,
    pub custom_id: Option<String>,
    pub line_id: Option<String>,
    pub connect_id: Option<String>,
    pub last_message_at: Option<Millis>,
}

// The editable columns of a member to create.
crate::impl_columns!(NewMember, Option<String>);

/// A partial update: `None` leaves a column alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberPatch {
    pub display_name: Option<Option<String>>,
    pub display_email: Option<Option<String>>,
    pub display_mobile: Option<Option<String>>,
    pub custom_id: Option<Option<String>>,
    pub line_id: Option<Option<String>>,
    pub connect_id: Option<Option<String>>,
    pub original_name: Option<Option<String>>,
    pub last_message_at: Option<Option<Millis>>,
    pub manual_unification: Option<bool>,
}

// The editable columns of a partial update.
crate::impl_columns!(MemberPatch, Option<Option<String>>);

/// An operation on one existing member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOp {
    Patch(MemberPatch),
    /// Sets (or with `None` clears) one unify-key attribute.
    Uni {
        attribute: Attribute,
        value: Option<String>,
    },
    ChangeUnification {
        attribute: Attribute,
        value: String,
    },
    CancelUnification,
    Delete,
}

impl MemberOp {
    /// Returns the reason recorded on the events the operation causes.
    pub fn reason(&self) -> Reason {
        match self {
            MemberOp::Patch(_) | MemberOp::Uni { .. } => Reason::MemberUpdated,
            MemberOp::ChangeUnification { .. } => Reason::ChangeUnification,
            MemberOp::CancelUnification => Reason::CancelUnification,
            MemberOp::Delete => Reason::MemberDeleted,
        }
    }
}

/// Builds the record of a new member (its profile id is set when it is unified).
pub fn new_member(
    id: Id,
    org_id: Id,
    source: unify_storage::Source,
    mut new: NewMember,
    now: Millis,
) -> Member {
    let ext = std::mem::take(&mut new.external_member_id);
    let mut member = Member {
        original_name: new.original_name.take(),
        last_message_at: new.last_message_at,
        ..Member::new(id, org_id, source, new.channel_id, ext, now)
    };
    for column in Column::ALL {
        *member.column_mut(column) = new.column_mut(column).take();
    }
    member
}

/// Applies an operation (other than delete) to a member record; returns whether it changed
/// anything.
pub fn apply(
    member: &mut Member,
    op: &MemberOp,
    keys: &KeySet,
    now: Millis,
) -> Result<bool, OpError> {
    let before = member.clone();
    match op {
        MemberOp::Patch(patch) => {
            for column in Column::ALL {
                if let Some(value) = patch.column(column) {
                    *member.column_mut(column) = value.clone();
                }
            }
            if let Some(name) = &patch.original_name {
                member.original_name = name.clone();
            }
            if let Some(at) = patch.last_message_at {
                member.last_message_at = at;
            }
            if let Some(manual) = patch.manual_unification {
                member.manual_unification = manual;
            }
        }
        MemberOp::Uni { attribute, value } => {
            *editable(member, *attribute)? = value.clone();
        }
        MemberOp::ChangeUnification { attribute, value } => {
            if value.trim().is_empty() {
                return Err(OpError::invalid("value must not be empty"));
            }
            editable(member, *attribute)?;
            for column in Column::ALL {
                *member.column_mut(column) = None;
            }
            *editable(member, *attribute)? = Some(value.clone());
            member.manual_unification = true;
        }
        MemberOp::CancelUnification => {
            for a in keys.attributes().filter(|a| a.is_editable()) {
                *editable(member, a)? = None;
            }
            member.manual_unification = true;
        }
        MemberOp::Delete => return Err(OpError::invalid("delete is not an update")),
    }
    // An operation that changes nothing leaves `updated_at` alone: it decides which member
    // supplies each column of the merged profile view (SPEC 2.4).
    let changed = *member != before;
    if changed {
        member.updated_at = now.max(member.updated_at);
    }
    Ok(changed)
}

/// Returns the column of an editable unify-key attribute; `external_member_id` identifies the
/// member on its channel and is never changed.
fn editable(member: &mut Member, attribute: Attribute) -> Result<&mut Option<String>, OpError> {
    attribute_slot(member, attribute).ok_or_else(|| {
        OpError::invalid("external_member_id identifies the member and cannot be changed")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use unify_storage::Source;

    fn member() -> Member {
        let mut m = new_member(
            7,
            1,
            Source::Caac,
            NewMember {
                channel_id: Some(3),
                external_member_id: "ou_1".into(),
                display_name: Some("Kevin".into()),
                display_email: Some("k@x.com".into()),
                display_mobile: Some("0912345678".into()),
                custom_id: Some("C1".into()),
                ..NewMember::default()
            },
            100,
        );
        m.line_id = Some("L1".into());
        m
    }

    #[test]
    fn change_unification_clears_every_editable_column_and_locks() {
        let mut m = member();
        let op = MemberOp::ChangeUnification {
            attribute: Attribute::CustomId,
            value: "C9".into(),
        };
        apply(
            &mut m,
            &op,
            &KeySet::plain(&[Attribute::DisplayEmail]).unwrap(),
            200,
        )
        .unwrap();
        assert_eq!(m.custom_id.as_deref(), Some("C9"));
        assert_eq!(
            (m.display_email, m.display_mobile, m.line_id, m.display_name),
            (None, None, None, None)
        );
        assert_eq!(m.external_member_id, "ou_1");
        assert!(m.manual_unification);
        assert_eq!(m.updated_at, 200);
    }

    #[test]
    fn cancel_clears_only_the_scope_key_attributes() {
        let mut m = member();
        let keys = KeySet::plain(&[Attribute::DisplayEmail, Attribute::ExternalMemberId]).unwrap();
        apply(&mut m, &MemberOp::CancelUnification, &keys, 200).unwrap();
        assert_eq!(m.display_email, None);
        assert_eq!(m.display_mobile.as_deref(), Some("0912345678"));
        assert_eq!(m.external_member_id, "ou_1");
        assert!(m.manual_unification);
    }

    #[test]
    fn external_member_id_cannot_be_set() {
        let mut m = member();
        let op = MemberOp::Uni {
            attribute: Attribute::ExternalMemberId,
            value: Some("x".into()),
        };
        assert!(matches!(
            apply(&mut m, &op, &KeySet::default(), 1),
            Err(OpError::InvalidArgument(_))
        ));
        let op = MemberOp::ChangeUnification {
            attribute: Attribute::ExternalMemberId,
            value: "x".into(),
        };
        assert!(apply(&mut m, &op, &KeySet::default(), 1).is_err());
        assert_eq!(m, member(), "nothing changed on refusal");
    }

    #[test]
    fn patch_sets_and_clears_and_releases_the_lock() {
        let mut m = member();
        m.manual_unification = true;
        let patch = MemberPatch {
            display_email: Some(None),
            line_id: Some(Some("L2".into())),
            manual_unification: Some(false),
            ..MemberPatch::default()
        };
        apply(&mut m, &MemberOp::Patch(patch), &KeySet::default(), 300).unwrap();
        assert_eq!((m.display_email, m.line_id.as_deref()), (None, Some("L2")));
        assert!(!m.manual_unification);
        assert_eq!(m.custom_id.as_deref(), Some("C1"));
    }
}
