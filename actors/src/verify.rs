//! The offline consistency checker behind `unify verify` (SPEC 2.3 and 8).
//!
//! It reads a store that no server has open and checks that every scope's stored partition
//! equals a full rebuild by the engine, that orgs and scopes agree on who belongs where, that
//! every member's org and channel make sense, and that the member indexes point back at the
//! members they index. Every violation is collected as a [`Problem`]; only a store that cannot
//! be read (an I/O or decode failure) makes [`verify`] fail.
//!
//! Members are read in one pass and the linking values of every scope that is checked are held
//! in memory at once, which is what a running server holds too.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use unify_storage::{Id, Member, Org, ScopeRecord, Source, Store, StoreError};

use crate::engine::{ATTRIBUTE_COUNT, Attribute, KeySet, Limits, LinkValues, Normalizer, Unifier};
use crate::links::{ScopeKeysError, member_links, scope_keys};

/// Partition mismatches reported one by one per scope; the rest of a scope's mismatches are
/// summed up in one [`Problem::MoreProfileMismatches`], so that a scope whose partition is
/// wholesale wrong does not bury every other finding.
pub const MAX_MISMATCHES_PER_SCOPE: usize = 20;

/// Members read per page while walking an org's org-members index.
const ORG_INDEX_PAGE: usize = 1024;

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of scopes in the store.
    pub scopes: usize,
    /// Number of members in the store.
    pub members: usize,
    /// Every inconsistency found, structure first, then members, then partitions.
    pub problems: Vec<Problem>,
    /// Scopes with a re-unification job that has not committed yet (ascending). Their stored
    /// partition may legitimately mix the old and the new one, so it was not checked; this is
    /// a note, not a problem.
    pub pending_jobs: Vec<Id>,
}

impl VerifyReport {
    /// Returns true when no problem was found (pending jobs are not problems).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    /// Formats a summary line, one line per pending job and one line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checked {} scopes and {} members: {} problems",
            self.scopes,
            self.members,
            self.problems.len()
        )?;
        for scope_id in &self.pending_jobs {
            write!(
                f,
                "\nnote: scope {scope_id} has a pending re-unification job; its partition was not checked"
            )?;
        }
        for problem in &self.problems {
            write!(f, "\n{problem}")?;
        }
        Ok(())
    }
}

/// One inconsistency of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A member's stored profile differs from the one a full rebuild of its scope gives.
    ProfileMismatch {
        scope_id: Id,
        member_id: Id,
        stored: Id,
        expected: Id,
    },
    /// Further members of the scope whose profile differs, beyond
    /// [`MAX_MISMATCHES_PER_SCOPE`].
    MoreProfileMismatches { scope_id: Id, count: usize },
    /// The scope's stored unify keys are not a valid setting; its partition cannot be rebuilt.
    InvalidScopeKeys { scope_id: Id, error: ScopeKeysError },
    /// An org names a scope that does not exist.
    OrgScopeMissing { org_id: Id, scope_id: Id },
    /// An org names a scope whose `org_ids` does not contain it.
    OrgNotListedByScope { org_id: Id, scope_id: Id },
    /// A scope lists an org that does not exist.
    ScopeOrgMissing { scope_id: Id, org_id: Id },
    /// A scope lists an org that names another scope.
    ScopeOrgElsewhere {
        scope_id: Id,
        org_id: Id,
        org_scope_id: Id,
    },
    /// An org is listed by more than one scope.
    OrgInSeveralScopes { org_id: Id, scope_ids: Vec<Id> },
    /// A member names an org that does not exist.
    MemberOrgMissing { member_id: Id, org_id: Id },
    /// A member's source differs from its org's.
    MemberSourceMismatch {
        member_id: Id,
        member_source: Source,
        org_id: Id,
        org_source: Source,
    },
    /// A member of a caac org has no channel.
    CaacMemberWithoutChannel { member_id: Id, org_id: Id },
    /// A member of a maac org has a channel.
    MaacMemberWithChannel {
        member_id: Id,
        org_id: Id,
        channel_id: Id,
    },
    /// A member names a channel that does not exist.
    MemberChannelMissing { member_id: Id, channel_id: Id },
    /// A member names a channel of another org.
    MemberChannelOfOtherOrg {
        member_id: Id,
        org_id: Id,
        channel_id: Id,
        channel_org_id: Id,
    },
    /// The by-external-id index entry of a member is absent or points at another member.
    ExtIndexMismatch {
        member_id: Id,
        org_id: Id,
        channel_id: Option<Id>,
        external_member_id: String,
        found: Option<Id>,
    },
    /// The username index entry of a member's username is absent or points at another member.
    UsernameIndexMismatch {
        member_id: Id,
        org_id: Id,
        username: String,
        found: Option<Id>,
    },
    /// A by-external-id index entry names a member that is absent or has another identity.
    StaleExtIndex {
        org_id: Id,
        channel_id: Option<Id>,
        external_member_id: String,
        member_id: Id,
    },
    /// A username index entry names a member that is absent or has another username.
    StaleUsernameIndex {
        org_id: Id,
        username: String,
        member_id: Id,
    },
    /// A member is missing from its org's org-members index.
    OrgIndexMissingMember { org_id: Id, member_id: Id },
    /// An org's org-members index lists a member of another org.
    OrgIndexForeignMember {
        org_id: Id,
        member_id: Id,
        member_org_id: Id,
    },
    /// An org's org-members index cannot be walked (an entry names a missing member).
    OrgIndexCorrupt { org_id: Id, message: String },
    /// A member's org-members entry holds another profile id than its record.
    OrgIndexProfileMismatch {
        org_id: Id,
        member_id: Id,
        indexed: Id,
        stored: Id,
    },
    /// A member's persisted linking values (made under the current normalizer configuration)
    /// differ from a fresh normalization of its record, which a scope load would trust.
    StaleLinkValues {
        member_id: Id,
        attribute: Attribute,
        persisted: Option<String>,
        fresh: Option<String>,
    },
}

impl fmt::Display for Problem {
    /// Formats the problem as one line naming the records involved.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ProfileMismatch {
                scope_id,
                member_id,
                stored,
                expected,
            } => write!(
                f,
                "scope {scope_id}: member {member_id} is stored in profile {stored} but a full rebuild puts it in profile {expected}"
            ),
            Problem::MoreProfileMismatches { scope_id, count } => write!(
                f,
                "scope {scope_id}: {count} more members are stored in a profile that differs from a full rebuild"
            ),
            Problem::InvalidScopeKeys { scope_id, error } => {
                write!(f, "scope {scope_id}: invalid unify keys: {error}")
            }
            Problem::OrgScopeMissing { org_id, scope_id } => {
                write!(
                    f,
                    "org {org_id} names scope {scope_id}, which does not exist"
                )
            }
            Problem::OrgNotListedByScope { org_id, scope_id } => write!(
                f,
                "org {org_id} names scope {scope_id}, which does not list it"
            ),
            Problem::ScopeOrgMissing { scope_id, org_id } => {
                write!(
                    f,
                    "scope {scope_id} lists org {org_id}, which does not exist"
                )
            }
            Problem::ScopeOrgElsewhere {
                scope_id,
                org_id,
                org_scope_id,
            } => write!(
                f,
                "scope {scope_id} lists org {org_id}, which names scope {org_scope_id}"
            ),
            Problem::OrgInSeveralScopes { org_id, scope_ids } => {
                let scopes: Vec<String> = scope_ids.iter().map(Id::to_string).collect();
                write!(
                    f,
                    "org {org_id} is listed by several scopes: {}",
                    scopes.join(", ")
                )
            }
            Problem::MemberOrgMissing { member_id, org_id } => write!(
                f,
                "member {member_id} names org {org_id}, which does not exist"
            ),
            Problem::MemberSourceMismatch {
                member_id,
                member_source,
                org_id,
                org_source,
            } => write!(
                f,
                "member {member_id} has source {} but its org {org_id} has source {}",
                member_source.as_str(),
                org_source.as_str()
            ),
            Problem::CaacMemberWithoutChannel { member_id, org_id } => {
                write!(f, "member {member_id} of caac org {org_id} has no channel")
            }
            Problem::MaacMemberWithChannel {
                member_id,
                org_id,
                channel_id,
            } => write!(
                f,
                "member {member_id} of maac org {org_id} has channel {channel_id}"
            ),
            Problem::MemberChannelMissing {
                member_id,
                channel_id,
            } => write!(
                f,
                "member {member_id} names channel {channel_id}, which does not exist"
            ),
            Problem::MemberChannelOfOtherOrg {
                member_id,
                org_id,
                channel_id,
                channel_org_id,
            } => write!(
                f,
                "member {member_id} of org {org_id} names channel {channel_id} of org {channel_org_id}"
            ),
            Problem::ExtIndexMismatch {
                member_id,
                org_id,
                channel_id,
                external_member_id,
                found,
            } => {
                let channel = channel_id.map_or_else(|| "none".to_owned(), |c| c.to_string());
                write!(
                    f,
                    "member {member_id}: the external-id index entry (org {org_id}, channel {channel}, external id {external_member_id:?}) points at {}",
                    pointee(*found)
                )
            }
            Problem::UsernameIndexMismatch {
                member_id,
                org_id,
                username,
                found,
            } => write!(
                f,
                "member {member_id}: the username index entry (org {org_id}, username {username:?}) points at {}",
                pointee(*found)
            ),
            Problem::StaleExtIndex {
                org_id,
                channel_id,
                external_member_id,
                member_id,
            } => {
                let channel = channel_id.map_or_else(|| "none".to_owned(), |c| c.to_string());
                write!(
                    f,
                    "the external-id index entry (org {org_id}, channel {channel}, external id {external_member_id:?}) points at member {member_id}, which is absent or has another identity"
                )
            }
            Problem::StaleUsernameIndex {
                org_id,
                username,
                member_id,
            } => write!(
                f,
                "the username index entry (org {org_id}, username {username:?}) points at member {member_id}, which is absent or has another username"
            ),
            Problem::OrgIndexMissingMember { org_id, member_id } => write!(
                f,
                "org {org_id}: member {member_id} is missing from the org-members index"
            ),
            Problem::OrgIndexForeignMember {
                org_id,
                member_id,
                member_org_id,
            } => write!(
                f,
                "org {org_id}: the org-members index lists member {member_id} of org {member_org_id}"
            ),
            Problem::OrgIndexProfileMismatch {
                org_id,
                member_id,
                indexed,
                stored,
            } => write!(
                f,
                "member {member_id}: the org-members index entry (org {org_id}) holds profile {indexed}, the member record {stored}"
            ),
            Problem::StaleLinkValues {
                member_id,
                attribute,
                persisted,
                fresh,
            } => write!(
                f,
                "member {member_id}: the persisted linking value of {attribute} is {persisted:?}, a fresh normalization gives {fresh:?}"
            ),
            Problem::OrgIndexCorrupt { org_id, message } => {
                write!(
                    f,
                    "org {org_id}: the org-members index is corrupt: {message}"
                )
            }
        }
    }
}

/// Returns how an index entry's target reads in a problem line.
fn pointee(found: Option<Id>) -> String {
    match found {
        Some(id) => format!("member {id}"),
        None => "nothing".to_owned(),
    }
}

/// Checks the whole store; see the module documentation. `normalizer` and `limits` must be the
/// ones the server runs with, since the partition depends on them.
pub fn verify(
    store: &Store,
    normalizer: &Normalizer,
    limits: Limits,
) -> Result<VerifyReport, StoreError> {
    let orgs: BTreeMap<Id, Org> = store.list_orgs()?.into_iter().map(|o| (o.id, o)).collect();
    let scopes: BTreeMap<Id, ScopeRecord> = store
        .list_scopes()?
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    let mut problems = Vec::new();
    check_structure(&orgs, &scopes, &mut problems);

    let mut pending_jobs = Vec::new();
    let mut rebuilds: BTreeMap<Id, Rebuild> = BTreeMap::new();
    // The scopes whose rebuild includes an org's members: those that list the org.
    let mut rebuilds_of_org: HashMap<Id, Vec<Id>> = HashMap::new();
    for scope in scopes.values() {
        let keys = match scope_keys(scope) {
            Ok(keys) => Some(keys),
            Err(error) => {
                problems.push(Problem::InvalidScopeKeys {
                    scope_id: scope.id,
                    error,
                });
                None
            }
        };
        if scope.pending_job.is_some() {
            pending_jobs.push(scope.id);
            continue;
        }
        let Some(keys) = keys else { continue };
        rebuilds.insert(scope.id, Rebuild::new(keys));
        for &org_id in &scope.org_ids {
            let listed = rebuilds_of_org.entry(org_id).or_default();
            if !listed.contains(&scope.id) {
                listed.push(scope.id);
            }
        }
    }

    let mut members = 0;
    let mut members_of_org: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut channels = ChannelOrgs::default();
    for member in store.scan_members() {
        let member = member?;
        members += 1;
        check_member(store, &orgs, &mut channels, &member, &mut problems)?;
        members_of_org
            .entry(member.org_id)
            .or_default()
            .push(member.id);
        if let Some(scope_ids) = rebuilds_of_org.get(&member.org_id) {
            let links = member_links(normalizer, &member);
            for scope_id in scope_ids {
                if let Some(rebuild) = rebuilds.get_mut(scope_id) {
                    rebuild.push(&member, links.clone());
                }
            }
        }
    }

    for &org_id in orgs.keys() {
        let expected = members_of_org.get(&org_id).map_or(&[][..], Vec::as_slice);
        check_org_index(store, org_id, expected, &mut problems)?;
        check_org_entries(store, normalizer, org_id, &mut problems)?;
    }
    check_index_entries(store, &mut problems)?;
    for (scope_id, rebuild) in rebuilds {
        rebuild.check(scope_id, limits, &mut problems);
    }

    Ok(VerifyReport {
        scopes: scopes.len(),
        members,
        problems,
        pending_jobs,
    })
}

/// Checks that every identity and username index entry names a member with exactly that
/// identity or username: a stale entry would make a create answer with the wrong member or
/// keep a username taken.
fn check_index_entries(store: &Store, problems: &mut Vec<Problem>) -> Result<(), StoreError> {
    let member = |id| match store.get_member(id) {
        Ok(member) => Ok(Some(member)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    };
    for entry in store.scan_ext_index() {
        let entry = entry?;
        let holds = member(entry.member_id)?.is_some_and(|m| {
            m.org_id == entry.org_id
                && m.channel_id == entry.channel_id
                && m.external_member_id == entry.name
        });
        if !holds {
            problems.push(Problem::StaleExtIndex {
                org_id: entry.org_id,
                channel_id: entry.channel_id,
                external_member_id: entry.name,
                member_id: entry.member_id,
            });
        }
    }
    for entry in store.scan_username_index() {
        let entry = entry?;
        let holds = member(entry.member_id)?.is_some_and(|m| {
            m.org_id == entry.org_id && m.username.as_deref() == Some(entry.name.as_str())
        });
        if !holds {
            problems.push(Problem::StaleUsernameIndex {
                org_id: entry.org_id,
                username: entry.name,
                member_id: entry.member_id,
            });
        }
    }
    Ok(())
}

/// Checks that orgs and scopes agree on membership: each org's scope lists it, each listed org
/// names the scope, and no org is listed twice.
fn check_structure(
    orgs: &BTreeMap<Id, Org>,
    scopes: &BTreeMap<Id, ScopeRecord>,
    problems: &mut Vec<Problem>,
) {
    for org in orgs.values() {
        match scopes.get(&org.scope_id) {
            None => problems.push(Problem::OrgScopeMissing {
                org_id: org.id,
                scope_id: org.scope_id,
            }),
            Some(scope) if !scope.org_ids.contains(&org.id) => {
                problems.push(Problem::OrgNotListedByScope {
                    org_id: org.id,
                    scope_id: org.scope_id,
                });
            }
            Some(_) => {}
        }
    }
    let mut listed_by: BTreeMap<Id, Vec<Id>> = BTreeMap::new();
    for scope in scopes.values() {
        for &org_id in &scope.org_ids {
            let listed = listed_by.entry(org_id).or_default();
            if listed.last() == Some(&scope.id) {
                // Listed twice by the same scope: harmless, and reported once.
                continue;
            }
            listed.push(scope.id);
            match orgs.get(&org_id) {
                None => problems.push(Problem::ScopeOrgMissing {
                    scope_id: scope.id,
                    org_id,
                }),
                Some(org) if org.scope_id != scope.id => {
                    problems.push(Problem::ScopeOrgElsewhere {
                        scope_id: scope.id,
                        org_id,
                        org_scope_id: org.scope_id,
                    });
                }
                Some(_) => {}
            }
        }
    }
    for (org_id, scope_ids) in listed_by {
        if scope_ids.len() > 1 {
            problems.push(Problem::OrgInSeveralScopes { org_id, scope_ids });
        }
    }
}

/// The org of each channel looked up so far (`None`: the channel does not exist), so that a
/// channel is read once however many members it has.
#[derive(Debug, Default)]
struct ChannelOrgs(HashMap<Id, Option<Id>>);

impl ChannelOrgs {
    /// Returns the org of channel `channel_id`, or `None` when the channel does not exist.
    fn org_of(&mut self, store: &Store, channel_id: Id) -> Result<Option<Id>, StoreError> {
        if let Some(&org) = self.0.get(&channel_id) {
            return Ok(org);
        }
        let org = match store.get_channel(channel_id) {
            Ok(channel) => Some(channel.org_id),
            Err(err) if err.is_not_found() => None,
            Err(err) => return Err(err),
        };
        self.0.insert(channel_id, org);
        Ok(org)
    }
}

/// Checks one member's org, source and channel, and that its by-external-id and username
/// index entries point back at it.
fn check_member(
    store: &Store,
    orgs: &BTreeMap<Id, Org>,
    channels: &mut ChannelOrgs,
    member: &Member,
    problems: &mut Vec<Problem>,
) -> Result<(), StoreError> {
    let member_id = member.id;
    match orgs.get(&member.org_id) {
        None => problems.push(Problem::MemberOrgMissing {
            member_id,
            org_id: member.org_id,
        }),
        Some(org) => {
            if member.source != org.source {
                problems.push(Problem::MemberSourceMismatch {
                    member_id,
                    member_source: member.source,
                    org_id: org.id,
                    org_source: org.source,
                });
            }
            // The org's source decides whether a channel is required: the org is the record
            // the member belongs to, and a source mismatch is reported on its own.
            match (org.source, member.channel_id) {
                (Source::Caac, None) => problems.push(Problem::CaacMemberWithoutChannel {
                    member_id,
                    org_id: org.id,
                }),
                (Source::Caac, Some(channel_id)) => match channels.org_of(store, channel_id)? {
                    None => problems.push(Problem::MemberChannelMissing {
                        member_id,
                        channel_id,
                    }),
                    Some(channel_org_id) if channel_org_id != org.id => {
                        problems.push(Problem::MemberChannelOfOtherOrg {
                            member_id,
                            org_id: org.id,
                            channel_id,
                            channel_org_id,
                        });
                    }
                    Some(_) => {}
                },
                (Source::Maac, Some(channel_id)) => {
                    problems.push(Problem::MaacMemberWithChannel {
                        member_id,
                        org_id: org.id,
                        channel_id,
                    });
                }
                (Source::Maac, None) => {}
            }
        }
    }

    let found =
        store.lookup_member_by_ext(member.org_id, member.channel_id, &member.external_member_id)?;
    if found != Some(member_id) {
        problems.push(Problem::ExtIndexMismatch {
            member_id,
            org_id: member.org_id,
            channel_id: member.channel_id,
            external_member_id: member.external_member_id.clone(),
            found,
        });
    }
    if let Some(username) = &member.username {
        let found = store.lookup_username(member.org_id, username)?;
        if found != Some(member_id) {
            problems.push(Problem::UsernameIndexMismatch {
                member_id,
                org_id: member.org_id,
                username: username.clone(),
                found,
            });
        }
    }
    Ok(())
}

/// Checks that the org-members index of `org_id` lists exactly the members of the org;
/// `expected` holds their ids, ascending.
///
/// An entry that names a missing member makes the store refuse the page holding it, and the
/// page cannot skip it. The walk then goes on one entry at a time up to that entry, reports it,
/// and stops; members past the point it reached are not reported as missing, since whether the
/// index lists them is unknown.
fn check_org_index(
    store: &Store,
    org_id: Id,
    expected: &[Id],
    problems: &mut Vec<Problem>,
) -> Result<(), StoreError> {
    let mut indexed = Vec::with_capacity(expected.len());
    let mut after = 0;
    let mut page_size = ORG_INDEX_PAGE;
    let complete = loop {
        let page = match store.members_of_org_page(org_id, after, page_size) {
            Ok(page) => page,
            Err(StoreError::Corrupt(_)) if page_size > 1 => {
                page_size = 1;
                continue;
            }
            Err(StoreError::Corrupt(message)) => {
                problems.push(Problem::OrgIndexCorrupt { org_id, message });
                break false;
            }
            Err(err) => return Err(err),
        };
        for member in &page {
            if member.org_id == org_id {
                indexed.push(member.id);
            } else {
                problems.push(Problem::OrgIndexForeignMember {
                    org_id,
                    member_id: member.id,
                    member_org_id: member.org_id,
                });
            }
        }
        let Some(last) = page.last() else {
            break true;
        };
        if last.id <= after {
            // Paging resumes after the id of the last record read; a record whose id is not
            // the one of its key would make it read the same page forever.
            problems.push(Problem::OrgIndexCorrupt {
                org_id,
                message: format!("member record {} is out of key order", last.id),
            });
            break false;
        }
        after = last.id;
        if page.len() < page_size {
            break true;
        }
    };
    let checked = if complete {
        expected
    } else {
        &expected[..expected.partition_point(|&id| id <= after)]
    };
    indexed.sort_unstable();
    for member_id in sorted_difference(checked, &indexed) {
        problems.push(Problem::OrgIndexMissingMember { org_id, member_id });
    }
    Ok(())
}

/// Checks what a scope load trusts in an org's org-members entries: each entry's profile id
/// equals its member record's, and linking values persisted under the current normalizer
/// configuration equal a fresh normalization of the record (values under another
/// configuration are recomputed at load, so they are not a problem). Entries naming a missing
/// member are reported by [`check_org_index`].
fn check_org_entries(
    store: &Store,
    normalizer: &Normalizer,
    org_id: Id,
    problems: &mut Vec<Problem>,
) -> Result<(), StoreError> {
    for entry in store.org_member_entries(org_id, 0..=Id::MAX) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(StoreError::Codec(message)) => {
                problems.push(Problem::OrgIndexCorrupt { org_id, message });
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let member = match store.get_member(entry.member_id) {
            Ok(member) => member,
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(err),
        };
        if let Some(indexed) = entry.profile_id
            && indexed != member.profile_id
        {
            problems.push(Problem::OrgIndexProfileMismatch {
                org_id,
                member_id: member.id,
                indexed,
                stored: member.profile_id,
            });
        }
        let Some(persisted) = entry.links else {
            continue;
        };
        if persisted.normalizer != normalizer.fingerprint() {
            continue;
        }
        let fresh = member_links(normalizer, &member);
        for attribute in Attribute::ALL {
            let persisted = persisted.values.get(attribute.index()).cloned().flatten();
            let fresh = fresh.0[attribute.index()].clone();
            if persisted != fresh {
                problems.push(Problem::StaleLinkValues {
                    member_id: member.id,
                    attribute,
                    persisted,
                    fresh,
                });
            }
        }
        if persisted.values.len() != ATTRIBUTE_COUNT {
            problems.push(Problem::OrgIndexCorrupt {
                org_id,
                message: format!(
                    "member {} has {} persisted linking values",
                    member.id,
                    persisted.values.len()
                ),
            });
        }
    }
    Ok(())
}

/// Returns the ids of `a` that are not in `b`; both are ascending.
fn sorted_difference(a: &[Id], b: &[Id]) -> Vec<Id> {
    let mut missing = Vec::new();
    let mut rest = b;
    for &id in a {
        let skip = rest.partition_point(|&other| other < id);
        rest = &rest[skip..];
        if rest.first() != Some(&id) {
            missing.push(id);
        }
    }
    missing
}

/// The members of one scope gathered for its full rebuild.
#[derive(Debug)]
struct Rebuild {
    keys: KeySet,
    /// `(member, stored profile)`, ascending member id (the order members are scanned in).
    stored: Vec<(Id, Id)>,
    links: Vec<(Id, LinkValues)>,
}

impl Rebuild {
    fn new(keys: KeySet) -> Self {
        Rebuild {
            keys,
            stored: Vec::new(),
            links: Vec::new(),
        }
    }

    fn push(&mut self, member: &Member, links: LinkValues) {
        self.stored.push((member.id, member.profile_id));
        self.links.push((member.id, links));
    }

    /// Rebuilds the scope's partition and reports every member whose stored profile differs.
    fn check(self, scope_id: Id, limits: Limits, problems: &mut Vec<Problem>) {
        let unifier = Unifier::from_members(self.keys, limits, self.links);
        let mut mismatches = 0;
        for &(member_id, stored) in &self.stored {
            // Every stored member was given to the unifier, so it always has a profile.
            let Some(expected) = unifier.profile_of(member_id) else {
                continue;
            };
            if stored == expected {
                continue;
            }
            mismatches += 1;
            if mismatches <= MAX_MISMATCHES_PER_SCOPE {
                problems.push(Problem::ProfileMismatch {
                    scope_id,
                    member_id,
                    stored,
                    expected,
                });
            }
        }
        if mismatches > MAX_MISMATCHES_PER_SCOPE {
            problems.push(Problem::MoreProfileMismatches {
                scope_id,
                count: mismatches - MAX_MISMATCHES_PER_SCOPE,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_difference_keeps_ids_missing_from_the_other_side() {
        assert_eq!(sorted_difference(&[1, 3, 5, 7], &[3, 4, 7]), vec![1, 5]);
        assert_eq!(sorted_difference(&[], &[1]), Vec::<Id>::new());
        assert_eq!(sorted_difference(&[2], &[]), vec![2]);
    }
}
