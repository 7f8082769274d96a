//! The merged view of a unified profile (SPEC 2.4).

use super::column::COLUMN_COUNT;
use super::unifier::MemberId;

/// One member's contribution to its profile's view.
#[derive(Debug, Clone, Copy)]
pub struct ViewSource<'a> {
    pub member_id: MemberId,
    pub updated_at: i64,
    /// Indexed by [`super::Column::index`].
    pub fields: [Option<&'a str>; COLUMN_COUNT],
}

/// The merged profile: per editable column, the value of the most recently updated member that
/// has one (ties: larger member id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergedView {
    /// Indexed by [`super::Column::index`].
    pub fields: [Option<String>; COLUMN_COUNT],
    /// The latest `updated_at` of the profile's members.
    pub updated_at: i64,
}

/// Merges the members of one profile.
pub fn merged_view<'a>(members: impl IntoIterator<Item = ViewSource<'a>>) -> MergedView {
    let mut best: [Option<((i64, MemberId), &'a str)>; COLUMN_COUNT] = [None; COLUMN_COUNT];
    let mut updated_at = i64::MIN;
    for m in members {
        updated_at = updated_at.max(m.updated_at);
        let rank = (m.updated_at, m.member_id);
        for (slot, value) in best.iter_mut().zip(m.fields) {
            if let Some(v) = value
                && slot.is_none_or(|(r, _)| rank > r)
            {
                *slot = Some((rank, v));
            }
        }
    }
    MergedView {
        fields: best.map(|b| b.map(|(_, v)| v.to_owned())),
        updated_at: if updated_at == i64::MIN {
            0
        } else {
            updated_at
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_non_null_value_wins_and_ties_go_to_the_larger_member_id() {
        let view = merged_view([
            ViewSource {
                member_id: 1,
                updated_at: 100,
                fields: [
                    Some("Old"),
                    Some("a@x.com"),
                    Some("0912345678"),
                    None,
                    None,
                    None,
                ],
            },
            ViewSource {
                member_id: 2,
                updated_at: 200,
                fields: [Some("New"), None, None, Some("C1"), None, None],
            },
            ViewSource {
                member_id: 3,
                updated_at: 200,
                fields: [None, None, None, Some("C3"), None, None],
            },
        ]);
        assert_eq!(view.fields[0].as_deref(), Some("New"));
        assert_eq!(view.fields[1].as_deref(), Some("a@x.com"));
        assert_eq!(view.fields[2].as_deref(), Some("0912345678"));
        assert_eq!(view.fields[3].as_deref(), Some("C3"));
        assert_eq!(view.fields[4], None);
        assert_eq!(view.updated_at, 200);
    }
}
