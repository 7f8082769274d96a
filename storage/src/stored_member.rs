//! A member as the store and a scope's memory hold it: one immutable, shared byte string.
//!
//! The bytes are the format-version byte, the bincode encoding of the [`Member`] (its profile
//! id written as 0: profile ids are derived from the partition and never stored), then the
//! bincode encoding of its [`MemberLinks`]. Holding members encoded keeps a scope of a million
//! members compact (one allocation per member, no per-field strings) and lets a snapshot or a
//! journal record copy them without re-encoding. [`StoredMember::identity`] reads the
//! external id off the front of the bytes without decoding the rest.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec::{self, FORMAT_VERSION};
use crate::error::{Result, StoreError};
use crate::records::{Id, Member, MemberLinks, Millis, Source};

/// An encoded member with its normalized linking values. Cheap to clone (shared bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredMember(Arc<[u8]>);

impl std::fmt::Debug for StoredMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.member() {
            Ok(member) => write!(f, "StoredMember({member:?})"),
            Err(err) => write!(f, "StoredMember(<{err}>)"),
        }
    }
}

impl StoredMember {
    /// Encodes `member` (its profile id is not kept) with its linking values.
    pub fn new(member: &Member, links: &MemberLinks) -> StoredMember {
        let mut bytes = Vec::with_capacity(160);
        bytes.push(FORMAT_VERSION);
        encode_into(&mut bytes, &BorrowedMember::of(member));
        encode_into(&mut bytes, links);
        StoredMember(bytes.into())
    }

    /// Completes a draft: the member it holds, with its id, org, source and creation time
    /// (its update time too), encoded as [`StoredMember::new`] encodes it.
    pub fn complete(
        draft: &MemberDraft,
        id: Id,
        org_id: Id,
        source: Source,
        created_at: Millis,
    ) -> StoredMember {
        let mut bytes = Vec::with_capacity(24 + draft.middle.len() + draft.links.len());
        bytes.push(FORMAT_VERSION);
        encode_into(&mut bytes, &id);
        encode_into(&mut bytes, &org_id);
        encode_into(&mut bytes, &source);
        bytes.extend_from_slice(&draft.middle);
        encode_into(&mut bytes, &created_at);
        encode_into(&mut bytes, &created_at);
        bytes.extend_from_slice(&draft.links);
        StoredMember(bytes.into())
    }

    /// Wraps bytes read from the store; they are checked when decoded.
    pub fn from_bytes(bytes: &[u8]) -> StoredMember {
        StoredMember(bytes.into())
    }

    /// Returns the encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Returns the member, its profile id set to its own id (the caller knows the real one).
    pub fn member(&self) -> Result<Member> {
        Ok(self.decode()?.0)
    }

    /// Returns the member (profile id set to its own id) and its linking values.
    pub fn decode(&self) -> Result<(Member, MemberLinks)> {
        let (mut member, links): (Member, MemberLinks) = codec::decode(&self.0)?;
        member.profile_id = member.id;
        Ok((member, links))
    }

    /// Returns the linking values only.
    pub fn links(&self) -> Result<MemberLinks> {
        Ok(self.decode()?.1)
    }

    /// Returns what loading a scope needs of the member, borrowed from the bytes: no string
    /// is allocated, which matters when a million members are read at once.
    pub fn outline(&self) -> Result<MemberOutline<'_>> {
        let (member, links): (BorrowedMember<'_>, BorrowedLinks<'_>) =
            codec::decode_borrowed(&self.0)?;
        Ok(MemberOutline {
            id: member.id,
            org_id: member.org_id,
            channel_id: member.channel_id,
            external_member_id: member.external_member_id,
            username: member.username,
            normalizer: links.normalizer,
            link_values: links.values,
        })
    }

    /// Returns `(org id, channel id)` read off the front of the bytes.
    pub fn placement(&self) -> Result<(Id, Option<Id>)> {
        let (_, org, channel, _) = self.front()?;
        Ok((org, channel))
    }

    /// Returns `(member id, org id, channel id, external member id)` read off the front of the
    /// bytes, without decoding the rest.
    pub fn identity(&self) -> Result<(Id, Id, Option<Id>, &str)> {
        let corrupt = || StoreError::Codec(format!("malformed stored member {:?}", &self.0));
        let (id, org, channel, mut cursor) = self.front()?;
        let len = usize::try_from(cursor.varint().ok_or_else(corrupt)?).map_err(|_| corrupt())?;
        let ext = cursor.take(len).ok_or_else(corrupt)?;
        let ext = std::str::from_utf8(ext).map_err(|_| corrupt())?;
        Ok((id, org, channel, ext))
    }

    /// Reads the member id, org id and channel id; returns them with the cursor after them.
    fn front(&self) -> Result<(Id, Id, Option<Id>, Cursor<'_>)> {
        let corrupt = || StoreError::Codec(format!("malformed stored member {:?}", &self.0));
        let mut cursor = Cursor {
            bytes: &self.0,
            at: 1,
        };
        if self.0.first() != Some(&FORMAT_VERSION) {
            return Err(corrupt());
        }
        let id = cursor.varint().ok_or_else(corrupt)?;
        let org = cursor.varint().ok_or_else(corrupt)?;
        cursor.varint().ok_or_else(corrupt)?; // source
        let channel = match cursor.byte().ok_or_else(corrupt)? {
            0 => None,
            1 => Some(cursor.varint().ok_or_else(corrupt)?),
            _ => return Err(corrupt()),
        };
        Ok((id, org, channel, cursor))
    }
}

/// A new member encoded before the scope gives it its id, org and creation time. An import
/// reader drafts its lines off the scope actor's thread; the actor completes each draft
/// ([`StoredMember::complete`]) with one copy instead of encoding the member itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDraft {
    /// The encoding of the member's fields from `channel_id` to `last_message_at`.
    middle: Vec<u8>,
    /// The encoding of its linking values.
    links: Vec<u8>,
}

/// The fields of a member that a draft holds, borrowed (the others are given when it is
/// completed; its profile id is stored as 0).
#[derive(Debug, Clone, Copy)]
pub struct DraftFields<'a> {
    pub channel_id: Option<Id>,
    pub external_member_id: &'a str,
    pub original_name: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub username: Option<&'a str>,
    pub display_email: Option<&'a str>,
    pub display_mobile: Option<&'a str>,
    pub custom_id: Option<&'a str>,
    pub line_id: Option<&'a str>,
    pub connect_id: Option<&'a str>,
    pub manual_unification: bool,
    pub last_message_at: Option<Millis>,
}

impl MemberDraft {
    /// Drafts a member from its fields and its linking values (`normalizer`: the fingerprint
    /// of the normalizer that computed `link_values`, see [`MemberLinks`]).
    pub fn new(
        fields: &DraftFields<'_>,
        normalizer: u64,
        link_values: &[Option<String>],
    ) -> MemberDraft {
        let f = fields;
        // Member's fields from channel_id to last_message_at, in its order (a tuple encodes as
        // its elements one after the other, as a struct does), its profile id as 0.
        let middle = (
            (
                f.channel_id,
                f.external_member_id,
                f.original_name,
                f.display_name,
            ),
            (f.username, f.display_email, f.display_mobile, f.custom_id),
            (f.line_id, f.connect_id, f.manual_unification, 0 as Id),
            f.last_message_at,
        );
        let mut encoded = Vec::with_capacity(128);
        encode_into(&mut encoded, &middle);
        let mut links = Vec::with_capacity(64);
        encode_into(&mut links, &(normalizer, link_values));
        MemberDraft {
            middle: encoded,
            links,
        }
    }
}

/// What loading a scope needs of a stored member ([`StoredMember::outline`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberOutline<'a> {
    pub id: Id,
    pub org_id: Id,
    pub channel_id: Option<Id>,
    pub external_member_id: &'a str,
    pub username: Option<&'a str>,
    /// Fingerprint of the normalizer that produced `link_values` ([`MemberLinks::normalizer`]).
    pub normalizer: u64,
    pub link_values: Vec<Option<&'a str>>,
}

/// [`Member`] field for field (the encoding has no field names, so the order is what must
/// agree; a test checks it), its strings borrowed: members are encoded from it (with profile
/// id 0) without copying a string, and loads read it without allocating one.
#[derive(Serialize, Deserialize)]
#[allow(dead_code)] // every field must be read to reach the next; not all are used
struct BorrowedMember<'a> {
    id: Id,
    org_id: Id,
    source: Source,
    channel_id: Option<Id>,
    external_member_id: &'a str,
    #[serde(borrow)]
    original_name: Option<&'a str>,
    #[serde(borrow)]
    display_name: Option<&'a str>,
    #[serde(borrow)]
    username: Option<&'a str>,
    #[serde(borrow)]
    display_email: Option<&'a str>,
    #[serde(borrow)]
    display_mobile: Option<&'a str>,
    #[serde(borrow)]
    custom_id: Option<&'a str>,
    #[serde(borrow)]
    line_id: Option<&'a str>,
    #[serde(borrow)]
    connect_id: Option<&'a str>,
    manual_unification: bool,
    profile_id: Id,
    last_message_at: Option<Millis>,
    created_at: Millis,
    updated_at: Millis,
}

/// [`MemberLinks`] with its strings borrowed.
#[derive(Deserialize)]
struct BorrowedLinks<'a> {
    normalizer: u64,
    #[serde(borrow)]
    values: Vec<Option<&'a str>>,
}

impl<'a> BorrowedMember<'a> {
    /// Borrows `member`, its profile id as stored: 0.
    fn of(member: &'a Member) -> BorrowedMember<'a> {
        BorrowedMember {
            id: member.id,
            org_id: member.org_id,
            source: member.source,
            channel_id: member.channel_id,
            external_member_id: &member.external_member_id,
            original_name: member.original_name.as_deref(),
            display_name: member.display_name.as_deref(),
            username: member.username.as_deref(),
            display_email: member.display_email.as_deref(),
            display_mobile: member.display_mobile.as_deref(),
            custom_id: member.custom_id.as_deref(),
            line_id: member.line_id.as_deref(),
            connect_id: member.connect_id.as_deref(),
            manual_unification: member.manual_unification,
            profile_id: 0,
            last_message_at: member.last_message_at,
            created_at: member.created_at,
            updated_at: member.updated_at,
        }
    }
}

fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .unwrap_or_else(|err| panic!("encoding a plain record cannot fail: {err}"));
}

/// Reads bincode's varints (standard configuration) off a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    /// bincode's variable-length unsigned integer: one byte below 251, else a marker (251:
    /// u16, 252: u32, 253: u64) followed by the little-endian value.
    fn varint(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0..=250 => Some(u64::from(b)),
            251 => Some(u64::from(u16::from_le_bytes(
                self.take(2)?.try_into().ok()?,
            ))),
            252 => Some(u64::from(u32::from_le_bytes(
                self.take(4)?.try_into().ok()?,
            ))),
            253 => Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Source;

    fn member(id: Id, channel: Option<Id>, ext: &str) -> Member {
        Member {
            original_name: Some("Ann".into()),
            display_email: Some("ann@example.com".into()),
            profile_id: 3,
            updated_at: 2,
            ..Member::new(id, 70_000, Source::Caac, channel, ext.into(), 1)
        }
    }

    #[test]
    fn the_outline_reads_what_a_full_decode_reads() {
        let mut full = member(300, Some(70_001), "ext-1");
        full.display_name = Some("Ann L".into());
        full.username = Some("ann".into());
        full.display_mobile = Some("0912 345 678".into());
        full.custom_id = Some("c-1".into());
        full.line_id = Some("L1".into());
        full.connect_id = Some("k".into());
        full.manual_unification = true;
        full.last_message_at = Some(5);
        let links = MemberLinks {
            normalizer: 77,
            values: vec![
                Some("ann@example.com".into()),
                None,
                Some("+886912345678".into()),
            ],
        };
        let stored = StoredMember::new(&full, &links);
        // The borrowed encoding is the member's own, profile id 0.
        let mut expected = vec![FORMAT_VERSION];
        let unified = Member {
            profile_id: 0,
            ..full.clone()
        };
        encode_into(&mut expected, &unified);
        encode_into(&mut expected, &links);
        assert_eq!(stored.as_bytes(), &expected[..]);
        let outline = stored.outline().unwrap();
        assert_eq!(
            outline,
            MemberOutline {
                id: 300,
                org_id: 70_000,
                channel_id: Some(70_001),
                external_member_id: "ext-1",
                username: Some("ann"),
                normalizer: 77,
                link_values: vec![Some("ann@example.com"), None, Some("+886912345678")],
            }
        );
        let mut maac = member(5, None, "m");
        maac.source = Source::Maac;
        let stored = StoredMember::new(&maac, &links);
        assert_eq!(stored.outline().unwrap().channel_id, None);
        assert!(
            StoredMember::from_bytes(&stored.as_bytes()[..10])
                .outline()
                .is_err()
        );
    }

    #[test]
    fn identity_is_read_off_the_front_for_any_id_width() {
        let links = MemberLinks {
            normalizer: 9,
            values: vec![Some("ann@example.com".into()), None],
        };
        for id in [1, 250, 251, 65_535, 65_536, u32::MAX as u64 + 1] {
            for channel in [None, Some(1), Some(300), Some(1 << 40)] {
                let ext = "Ü-é".repeat((id % 300) as usize + 1);
                let stored = StoredMember::new(&member(id, channel, &ext), &links);
                assert_eq!(
                    stored.identity().unwrap(),
                    (id, 70_000, channel, ext.as_str())
                );
                assert_eq!(stored.placement().unwrap(), (70_000, channel));
                let (back, back_links) = stored.decode().unwrap();
                assert_eq!(back.profile_id, id, "profile ids are not stored");
                assert_eq!(back.external_member_id, ext);
                assert_eq!(back_links, links);
            }
        }
    }

    #[test]
    fn a_completed_draft_is_the_member_encoded() {
        let links = MemberLinks {
            normalizer: 9,
            values: vec![Some("ann@example.com".into()), None, Some("x".into())],
        };
        for source in [Source::Caac, Source::Maac] {
            for id in [1, 250, 251, 65_536, u32::MAX as u64 + 1] {
                for now in [0, 1, 1_764_000_000_000, i64::MAX] {
                    let mut m = member(id, (source == Source::Caac).then_some(300), "é-1");
                    m.source = source;
                    m.created_at = now;
                    m.updated_at = now;
                    m.display_name = Some("Ann".into());
                    m.username = (id % 2 == 0).then(|| "ann".into());
                    m.manual_unification = id % 2 == 1;
                    m.last_message_at = Some(now / 2);
                    let fields = DraftFields {
                        channel_id: m.channel_id,
                        external_member_id: &m.external_member_id,
                        original_name: m.original_name.as_deref(),
                        display_name: m.display_name.as_deref(),
                        username: m.username.as_deref(),
                        display_email: m.display_email.as_deref(),
                        display_mobile: m.display_mobile.as_deref(),
                        custom_id: m.custom_id.as_deref(),
                        line_id: m.line_id.as_deref(),
                        connect_id: m.connect_id.as_deref(),
                        manual_unification: m.manual_unification,
                        last_message_at: m.last_message_at,
                    };
                    let draft = MemberDraft::new(&fields, links.normalizer, &links.values);
                    assert_eq!(
                        StoredMember::complete(&draft, id, m.org_id, source, now),
                        StoredMember::new(&m, &links),
                        "id {id}, now {now}"
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_bytes_are_an_error() {
        let links = MemberLinks {
            normalizer: 1,
            values: vec![],
        };
        let stored = StoredMember::new(&member(5, Some(2), "ext"), &links);
        for len in 0..stored.as_bytes().len() {
            let cut = StoredMember::from_bytes(&stored.as_bytes()[..len]);
            assert!(cut.decode().is_err(), "len {len}");
        }
    }
}
