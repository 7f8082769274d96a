//! The offline consistency checker behind `unify verify` (SPEC 2.3 and 8).
//!
//! It reads a store that no server has open and checks that every org's snapshot and journal
//! read back (no missing chunk or record), that the partition the journal's history produces
//! write by write (what the running scope computed) equals a full rebuild by the engine, that
//! orgs and scopes agree on who belongs where, that every member's org and channel make sense,
//! that no identity or username is held twice, that stored linking values equal a fresh
//! normalization, that the member id counter is ahead of every member and that event blocks
//! are in order. Every violation is collected as a [`Problem`]; only a store that cannot
//! be read (an I/O or decode failure) makes [`verify`] fail.
//!
//! Members are read in one pass and the linking values of every scope that is checked are held
//! in memory at once, which is what a running server holds too.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use unify_storage::{
    Id, IdKind, Member, MemberLinks, MemberLog, MemberWrite, Org, OrgLog, ScopeRecord, Source,
    Store, StoreError,
};

use crate::engine::{Attribute, KeySet, Limits, LinkValues, Normalizer, Unifier};
use crate::links::{ScopeKeysError, current_links, fresh_links, member_links, scope_keys};

/// Partition mismatches reported one by one per scope; the rest of a scope's mismatches are
/// summed up in one [`Problem::MoreProfileMismatches`], so that a scope whose partition is
/// wholesale wrong does not bury every other finding.
pub const MAX_MISMATCHES_PER_SCOPE: usize = 20;

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
    /// Two members of an org hold one identity (channel and external id).
    DuplicateIdentity {
        org_id: Id,
        channel_id: Option<Id>,
        external_member_id: String,
        member_ids: (Id, Id),
    },
    /// Two members of an org hold one username.
    DuplicateUsername {
        org_id: Id,
        username: String,
        member_ids: (Id, Id),
    },
    /// An org's snapshot or journal holds a member of another org.
    ForeignMember {
        org_id: Id,
        member_id: Id,
        member_org_id: Id,
    },
    /// An org's snapshot or journal cannot be read back (a missing chunk or record, a record
    /// that does not decode).
    OrgLogCorrupt { org_id: Id, message: String },
    /// An id counter is below an id in use: the next allocation would hand it out again.
    CounterBehind {
        kind: &'static str,
        counter: Id,
        in_use: Id,
    },
    /// A scope's event blocks overlap, run past its last seq, or are out of order.
    EventBlocksInconsistent { scope_id: Id, message: String },
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
            Problem::DuplicateIdentity {
                org_id,
                channel_id,
                external_member_id,
                member_ids: (first, second),
            } => {
                let channel = channel_id.map_or_else(|| "none".to_owned(), |c| c.to_string());
                write!(
                    f,
                    "org {org_id}: members {first} and {second} both hold the identity (channel {channel}, external id {external_member_id:?})"
                )
            }
            Problem::DuplicateUsername {
                org_id,
                username,
                member_ids: (first, second),
            } => write!(
                f,
                "org {org_id}: members {first} and {second} both hold the username {username:?}"
            ),
            Problem::ForeignMember {
                org_id,
                member_id,
                member_org_id,
            } => write!(
                f,
                "org {org_id}: its snapshot or journal holds member {member_id} of org {member_org_id}"
            ),
            Problem::OrgLogCorrupt { org_id, message } => {
                write!(
                    f,
                    "org {org_id}: the snapshot or journal is corrupt: {message}"
                )
            }
            Problem::CounterBehind {
                kind,
                counter,
                in_use,
            } => write!(
                f,
                "the {kind} id counter is at {counter} but {kind} {in_use} exists"
            ),
            Problem::EventBlocksInconsistent { scope_id, message } => {
                write!(
                    f,
                    "scope {scope_id}: event blocks are inconsistent: {message}"
                )
            }
            Problem::StaleLinkValues {
                member_id,
                attribute,
                persisted,
                fresh,
            } => write!(
                f,
                "member {member_id}: the persisted linking value of {attribute} is {persisted:?}, a fresh normalization gives {fresh:?}"
            ),
        }
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
    let mut channels = ChannelOrgs::default();
    let mut max_member = 0;
    // The orgs with a record and those with members stored without one (each such member is
    // reported as having a missing org).
    let mut org_ids: Vec<Id> = orgs.keys().copied().collect();
    org_ids.extend(store.logged_orgs()?);
    org_ids.sort_unstable();
    org_ids.dedup();
    for org_id in org_ids {
        let log = match store.read_org(org_id) {
            Ok(log) => log,
            Err(StoreError::Codec(message) | StoreError::Corrupt(message)) => {
                problems.push(Problem::OrgLogCorrupt { org_id, message });
                continue;
            }
            Err(e) => return Err(e),
        };
        let history = History::replay(log, normalizer)?;
        let mut identities: HashMap<(Option<Id>, String), Id> = HashMap::new();
        let mut usernames: HashMap<String, Id> = HashMap::new();
        for Replayed {
            member,
            stored_links,
            ..
        } in history.members.values()
        {
            members += 1;
            max_member = max_member.max(member.id);
            if member.org_id != org_id {
                problems.push(Problem::ForeignMember {
                    org_id,
                    member_id: member.id,
                    member_org_id: member.org_id,
                });
            }
            check_member(store, &orgs, &mut channels, member, &mut problems)?;
            check_links(normalizer, member, stored_links, &mut problems);
            let identity = (member.channel_id, member.external_member_id.clone());
            if let Some(&first) = identities.get(&identity) {
                problems.push(Problem::DuplicateIdentity {
                    org_id,
                    channel_id: member.channel_id,
                    external_member_id: member.external_member_id.clone(),
                    member_ids: (first, member.id),
                });
            }
            identities.insert(identity, member.id);
            if let Some(username) = &member.username {
                if let Some(&first) = usernames.get(username) {
                    problems.push(Problem::DuplicateUsername {
                        org_id,
                        username: username.clone(),
                        member_ids: (first, member.id),
                    });
                }
                usernames.insert(username.clone(), member.id);
            }
        }
        if let Some(scope_ids) = rebuilds_of_org.get(&org_id) {
            for scope_id in scope_ids {
                if let Some(rebuild) = rebuilds.get_mut(scope_id) {
                    rebuild.add(&history);
                }
            }
        }
    }
    let counter = store.counter_value(IdKind::Member)?;
    if counter < max_member {
        problems.push(Problem::CounterBehind {
            kind: "member",
            counter,
            in_use: max_member,
        });
    }
    for scope in scopes.values() {
        check_event_blocks(store, scope, &mut problems)?;
    }
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

/// Checks one member's org, source and channel.
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

    Ok(())
}

/// Checks that a member's stored linking values, when made under the normalizer the server
/// runs with (a load trusts them then), equal a fresh normalization of the member.
fn check_links(
    normalizer: &Normalizer,
    member: &Member,
    stored: &MemberLinks,
    problems: &mut Vec<Problem>,
) {
    let Some(persisted) = fresh_links(normalizer, stored.clone()) else {
        return;
    };
    let fresh = member_links(normalizer, member);
    for attribute in Attribute::ALL {
        let (p, f) = (&persisted.0[attribute.index()], &fresh.0[attribute.index()]);
        if p != f {
            problems.push(Problem::StaleLinkValues {
                member_id: member.id,
                attribute,
                persisted: p.clone(),
                fresh: f.clone(),
            });
        }
    }
}

/// Checks that a scope's event blocks are ascending, do not overlap and end at or before the
/// scope's last seq.
fn check_event_blocks(
    store: &Store,
    scope: &ScopeRecord,
    problems: &mut Vec<Problem>,
) -> Result<(), StoreError> {
    let mut previous: Option<u64> = None;
    for block in store.event_blocks(scope.id)? {
        let message = if block.first > block.last {
            Some(format!(
                "block {}..={} is reversed",
                block.first, block.last
            ))
        } else if previous.is_some_and(|p| block.first <= p) {
            Some(format!(
                "block {}..={} overlaps the one before",
                block.first, block.last
            ))
        } else if block.last > scope.last_seq {
            Some(format!(
                "block {}..={} runs past the last seq {}",
                block.first, block.last, scope.last_seq
            ))
        } else {
            None
        };
        if let Some(message) = message {
            problems.push(Problem::EventBlocksInconsistent {
                scope_id: scope.id,
                message,
            });
        }
        previous = Some(block.last);
    }
    Ok(())
}

/// An org's members as its snapshot and journal give them, and the writes that led there.
struct History {
    /// The members after the replay, by id.
    members: BTreeMap<Id, Replayed>,
    /// The snapshot's members, then every journal write, in order: the written member's
    /// linking values, `None` for a delete.
    writes: Vec<(Id, Option<LinkValues>)>,
}

/// A member as the replay left it.
struct Replayed {
    member: Member,
    /// Its linking values as stored.
    stored_links: MemberLinks,
    /// The values a scope load links it by (the stored ones when fresh).
    links: LinkValues,
}

impl History {
    /// Replays the log, decoding each write once.
    fn replay(log: OrgLog, normalizer: &Normalizer) -> Result<History, StoreError> {
        let puts = log
            .snapshot
            .into_iter()
            .map(MemberWrite::Put)
            .chain(log.journal.into_iter().flat_map(|(_, w)| w));
        let mut members = BTreeMap::new();
        let mut writes = Vec::new();
        for write in puts {
            match write {
                MemberWrite::Put(stored) => {
                    let (member, stored_links) = stored.decode()?;
                    let links = current_links(normalizer, &member, stored_links.clone());
                    writes.push((member.id, Some(links.clone())));
                    members.insert(
                        member.id,
                        Replayed {
                            member,
                            stored_links,
                            links,
                        },
                    );
                }
                MemberWrite::Delete(id) => {
                    members.remove(&id);
                    writes.push((id, None));
                }
            }
        }
        Ok(History { members, writes })
    }
}

/// The members of one scope, for comparing the partition its history produces write by write
/// (what a running scope computes) with a full rebuild of its members.
#[derive(Debug)]
struct Rebuild {
    keys: KeySet,
    /// Every write of the scope's orgs in order: linking values, `None` for a delete.
    writes: Vec<(Id, Option<LinkValues>)>,
    /// The members after them.
    members: Vec<(Id, LinkValues)>,
}

impl Rebuild {
    fn new(keys: KeySet) -> Self {
        Rebuild {
            keys,
            writes: Vec::new(),
            members: Vec::new(),
        }
    }

    fn add(&mut self, history: &History) {
        self.writes.extend(history.writes.iter().cloned());
        self.members.extend(
            history
                .members
                .iter()
                .map(|(&id, replayed)| (id, replayed.links.clone())),
        );
    }

    /// Applies the writes one by one, rebuilds the partition of the final members in one go,
    /// and reports every member whose profile differs between the two.
    fn check(self, scope_id: Id, limits: Limits, problems: &mut Vec<Problem>) {
        let mut incremental = Unifier::new(self.keys.clone(), limits);
        for (id, links) in &self.writes {
            match links {
                Some(links) => {
                    incremental.upsert(*id, links);
                }
                None => {
                    incremental.remove(*id);
                }
            }
        }
        let ids: Vec<Id> = self.members.iter().map(|(id, _)| *id).collect();
        let full = Unifier::from_members(self.keys, limits, self.members);
        let mut mismatches = 0;
        for member_id in ids {
            let (Some(stored), Some(expected)) = (
                incremental.profile_of(member_id),
                full.profile_of(member_id),
            ) else {
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
