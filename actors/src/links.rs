//! Translation between stored records and the engine's inputs, shared by the scope actor and
//! the offline verifier so that both see members exactly alike.

use std::borrow::Cow;

use unify_storage::{
    IdKind, Member, MemberLinks, MemberOutline, ScopeRecord, Store, StoreError, StoredMember,
    UnifyKeyRecord,
};

use crate::engine::{
    ATTRIBUTE_COUNT, Attribute, Column, Columns, KeySet, KeySetError, LinkValues, Normalizer,
    UnifyKey,
};

// The editable columns of a stored member.
crate::impl_columns!(Member, Option<String>);

/// Returns the raw value of a unify-key attribute of a record with editable columns and an
/// `external_member_id` (a member, or a member to create).
pub fn raw_value<'a>(
    columns: &'a impl Columns<Slot = Option<String>>,
    external_member_id: &'a str,
    attribute: Attribute,
) -> Option<&'a str> {
    match Column::of(attribute) {
        Some(column) => columns.column(column).as_deref(),
        None => Some(external_member_id),
    }
}

/// Returns the raw value of a unify-key attribute of a member.
pub fn attribute_value(member: &Member, attribute: Attribute) -> Option<&str> {
    raw_value(member, &member.external_member_id, attribute)
}

/// Returns a mutable slot for an editable unify-key attribute (`None` for
/// `external_member_id`, which is never edited).
pub fn attribute_slot(member: &mut Member, attribute: Attribute) -> Option<&mut Option<String>> {
    Column::of(attribute).map(|column| member.column_mut(column))
}

/// Returns the member's linking values.
pub fn member_links(normalizer: &Normalizer, member: &Member) -> LinkValues {
    let raw: [Option<&str>; ATTRIBUTE_COUNT] =
        std::array::from_fn(|i| attribute_value(member, Attribute::ALL[i]));
    LinkValues::normalize(normalizer, &raw, member.manual_unification)
}

/// Returns linking values in their stored form, stamped with the normalizer's fingerprint.
pub fn stored_links(normalizer: &Normalizer, links: &LinkValues) -> MemberLinks {
    MemberLinks {
        normalizer: normalizer.fingerprint(),
        values: links.0.to_vec(),
    }
}

/// Returns stored linking values when they were computed by a normalizer configured like
/// `normalizer`; `None` when they are stale (or malformed) and must be recomputed.
pub fn fresh_links(normalizer: &Normalizer, stored: MemberLinks) -> Option<LinkValues> {
    if stored.normalizer != normalizer.fingerprint() {
        return None;
    }
    let values: [Option<String>; ATTRIBUTE_COUNT] = stored.values.try_into().ok()?;
    Some(LinkValues(values))
}

/// Returns a stored member's linking values: the stored ones when they are fresh, else a new
/// normalization of the member.
pub fn current_links(normalizer: &Normalizer, member: &Member, stored: MemberLinks) -> LinkValues {
    fresh_links(normalizer, stored).unwrap_or_else(|| member_links(normalizer, member))
}

/// [`current_links`] for a member a scope load read as its outline: the stored values,
/// borrowed, when they are fresh, else a new normalization of the decoded member.
pub fn outline_links<'a>(
    normalizer: &Normalizer,
    outline: &MemberOutline<'a>,
    stored: &StoredMember,
) -> Result<[Option<Cow<'a, str>>; ATTRIBUTE_COUNT], StoreError> {
    if outline.normalizer == normalizer.fingerprint()
        && outline.link_values.len() == ATTRIBUTE_COUNT
    {
        return Ok(std::array::from_fn(|i| {
            outline.link_values[i].map(Cow::Borrowed)
        }));
    }
    let (member, links) = stored.decode()?;
    Ok(current_links(normalizer, &member, links)
        .0
        .map(|value| value.map(Cow::Owned)))
}

/// Returns the engine key set of a stored scope; a stored attribute the engine does not know
/// is reported, never skipped.
pub fn scope_keys(scope: &ScopeRecord) -> Result<KeySet, ScopeKeysError> {
    let keys = scope
        .keys
        .iter()
        .map(|k| {
            let attribute = k
                .attribute
                .parse::<Attribute>()
                .map_err(|e| ScopeKeysError::Attribute(e.0))?;
            Ok(UnifyKey {
                attribute,
                is_distinct: k.is_distinct,
            })
        })
        .collect::<Result<Vec<_>, ScopeKeysError>>()?;
    Ok(KeySet::new(keys)?)
}

/// Returns the stored records of `keys` in priority order: an attribute already in `current`
/// keeps its key id, every other key gets a fresh one.
pub fn key_records(
    store: &Store,
    current: &[UnifyKeyRecord],
    keys: &[UnifyKey],
) -> Result<Vec<UnifyKeyRecord>, StoreError> {
    let existing = |k: &UnifyKey| current.iter().find(|r| r.attribute == k.attribute.as_str());
    let fresh = keys.iter().filter(|k| existing(k).is_none()).count() as u64;
    let mut ids = store.allocate_ids(IdKind::UnifyKey, fresh)?;
    Ok(keys
        .iter()
        .map(|k| UnifyKeyRecord {
            id: existing(k)
                .map(|r| r.id)
                .or_else(|| ids.next())
                .expect("one fresh id per new key"),
            attribute: k.attribute.as_str().to_owned(),
            is_distinct: k.is_distinct,
        })
        .collect())
}

/// A stored key setting that the engine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeKeysError {
    #[error("stored unify key has unknown attribute `{0}`")]
    Attribute(String),
    #[error(transparent)]
    KeySet(#[from] KeySetError),
}
