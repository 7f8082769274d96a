//! `unify verify` against a real sled store: a consistent world passes, and each kind of
//! corruption an operator could meet is reported as a problem rather than a crash. Members are
//! written the way a scope writes them: journal records of `MemberWrite`s per org.

use tempfile::TempDir;
use unify_actors::engine::{Limits, Normalizer, Unifier};
use unify_actors::links::{member_links, scope_keys, stored_links};
use unify_actors::verify::{Problem, VerifyReport, verify};
use unify_storage::{
    Channel, EventRecord, Id, IdKind, JobKind, Member, MemberLinks, MemberLog, MemberWrite, Org,
    PendingJob, ScopeRecord, Source, Store, StoreError, StoredMember, UnifyKeyRecord, WriteBatch,
    codec, keys,
};

/// The caac org of the integrated scope.
const CAAC: Id = 10;
/// The maac org of the integrated scope.
const MAAC: Id = 11;
/// A maac org alone in its own scope, without keys.
const LONE: Id = 12;
/// The integrated scope (keys: display_email).
const SCOPE: Id = 1;
/// The scope of `LONE`.
const LONE_SCOPE: Id = 2;
/// The channel of `CAAC`.
const CHANNEL: Id = 20;

/// A store in a temporary directory, removed when dropped.
struct World {
    store: Store,
    dir: TempDir,
}

fn org(id: Id, source: Source, scope_id: Id) -> Org {
    Org {
        id,
        account_id: 1,
        source,
        name: format!("org {id}"),
        uuid: format!("uuid-{id}"),
        scope_id,
        created_at: 0,
    }
}

fn scope(id: Id, org_ids: Vec<Id>, attributes: &[&str]) -> ScopeRecord {
    ScopeRecord {
        id,
        org_ids,
        keys: attributes
            .iter()
            .enumerate()
            .map(|(i, attribute)| UnifyKeyRecord {
                id: 100 + i as Id,
                attribute: (*attribute).to_owned(),
                is_distinct: false,
            })
            .collect(),
        last_seq: 0,
        pending_job: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn member(id: Id, org_id: Id, email: Option<&str>) -> Member {
    let (source, channel_id) = if org_id == CAAC {
        (Source::Caac, Some(CHANNEL))
    } else {
        (Source::Maac, None)
    };
    Member {
        display_email: email.map(str::to_owned),
        ..Member::new(id, org_id, source, channel_id, format!("ext-{id}"), 0)
    }
}

/// Returns the profile of each member as the engine computes it for the scope.
fn profiles(scope: &ScopeRecord, members: &[Member]) -> Vec<Id> {
    let normalizer = Normalizer::default();
    let unifier = Unifier::from_members(
        scope_keys(scope).unwrap(),
        Limits::default(),
        members.iter().map(|m| (m.id, member_links(&normalizer, m))),
    );
    members
        .iter()
        .map(|m| unifier.profile_of(m.id).unwrap())
        .collect()
}

/// Returns the linking values a scope stores with `member` (fresh, current normalizer).
fn links_of(member: &Member) -> MemberLinks {
    let normalizer = Normalizer::default();
    stored_links(&normalizer, &member_links(&normalizer, member))
}

fn put(member: &Member) -> MemberWrite {
    MemberWrite::Put(StoredMember::new(member, &links_of(member)))
}

/// Writes a consistent world: scope 1 joins a caac org (one channel) and a maac org and links
/// by display_email; scope 2 holds a lone maac org without keys.
///
/// Members 100 and 101 share an email (written differently) and form profile 100; 102 and 103
/// are alone; 104 is the lone org's only member. Each org's members are its journal record 1.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();

    let integrated = scope(SCOPE, vec![CAAC, MAAC], &["display_email"]);
    let lone = scope(LONE_SCOPE, vec![LONE], &[]);
    let mut ann = member(100, CAAC, Some("ann@example.com"));
    ann.username = Some("ann".to_owned());

    let mut batch = WriteBatch::new();
    batch
        .put_scope(&integrated)
        .put_scope(&lone)
        .put_org(&org(CAAC, Source::Caac, SCOPE))
        .put_org(&org(MAAC, Source::Maac, SCOPE))
        .put_org(&org(LONE, Source::Maac, LONE_SCOPE))
        .put_channel(&channel(CHANNEL, CAAC));
    batch.append_journal(
        CAAC,
        1,
        &[put(&ann), put(&member(102, CAAC, Some("bob@example.com")))],
    );
    batch.append_journal(
        MAAC,
        1,
        &[
            put(&member(101, MAAC, Some(" ANN@Example.com "))),
            put(&member(103, MAAC, None)),
        ],
    );
    batch.append_journal(LONE, 1, &[put(&member(104, LONE, Some("ann@example.com")))]);
    store.apply(batch).unwrap();
    store.raise_counter(IdKind::Member, 104).unwrap();
    store.flush().unwrap();
    World { store, dir }
}

fn channel(id: Id, org_id: Id) -> Channel {
    Channel {
        id,
        org_id,
        name: "line".to_owned(),
        channel_type: "line".to_owned(),
        tenant_key: None,
        auto_provision: false,
        contact_api: None,
        webhook_secret: "secret".to_owned(),
        created_at: 0,
        updated_at: 0,
    }
}

impl World {
    fn verify(&self) -> VerifyReport {
        verify(&self.store, &Normalizer::default(), Limits::default()).unwrap()
    }

    /// Returns member `id` of org `org_id` as its snapshot and journal give it.
    fn member(&self, org_id: Id, id: Id) -> Member {
        let members = self.store.read_org(org_id).unwrap().replay().unwrap();
        members[&id].member().unwrap()
    }

    /// Appends `writes` as the next journal record of `org_id`, raising the member counter to
    /// the ids put (as their allocation would have).
    fn journal(&self, org_id: Id, writes: &[MemberWrite]) {
        let seq = self.store.read_org(org_id).unwrap().last_seq() + 1;
        let mut batch = WriteBatch::new();
        batch.append_journal(org_id, seq, writes);
        self.store.apply(batch).unwrap();
        for write in writes {
            self.store
                .raise_counter(IdKind::Member, write.member_id().unwrap())
                .unwrap();
        }
    }

    fn put(&self, write: impl FnOnce(&mut WriteBatch)) {
        let mut batch = WriteBatch::new();
        write(&mut batch);
        self.store.apply(batch).unwrap();
    }
}

/// Asserts that every problem formats as one non-empty line.
fn assert_one_line_each(report: &VerifyReport) {
    for problem in &report.problems {
        let line = problem.to_string();
        assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
    }
}

#[test]
fn consistent_world_is_ok() {
    let world = world();
    let members: Vec<Member> = [(CAAC, 100), (MAAC, 101), (CAAC, 102), (MAAC, 103)]
        .iter()
        .map(|&(org, id)| world.member(org, id))
        .collect();
    assert_eq!(
        profiles(
            &scope(SCOPE, vec![CAAC, MAAC], &["display_email"]),
            &members
        ),
        vec![100, 100, 102, 103],
        "fixture links 100 and 101"
    );

    let report = world.verify();

    assert!(report.is_ok(), "{report}");
    assert_eq!(report.scopes, 2);
    assert_eq!(report.members, 5);
    assert!(report.pending_jobs.is_empty());
    assert!(
        report
            .to_string()
            .starts_with("checked 2 scopes and 5 members: 0 problems")
    );
}

#[test]
fn a_history_of_edits_deletes_and_snapshots_is_ok() {
    let world = world();
    // 101 moves away from ann's email, 103 takes it, 102 is deleted and comes back changed.
    let mut moved = world.member(MAAC, 101);
    moved.display_email = Some("carol@example.com".to_owned());
    let mut joined = world.member(MAAC, 103);
    joined.display_email = Some("ann@example.com".to_owned());
    world.journal(MAAC, &[put(&moved), put(&joined)]);
    world.journal(CAAC, &[MemberWrite::Delete(102)]);
    let snapshot: Vec<StoredMember> = world
        .store
        .read_org(CAAC)
        .unwrap()
        .replay()
        .unwrap()
        .into_values()
        .collect();
    world
        .store
        .write_snapshot(CAAC, 2, &mut snapshot.into_iter())
        .unwrap();
    let mut back = member(102, CAAC, Some("carol@example.com"));
    back.display_name = Some("Bob".to_owned());
    world.journal(CAAC, &[put(&back)]);
    world.put(|b| {
        let mut integrated = scope(SCOPE, vec![CAAC, MAAC], &["display_email"]);
        integrated.last_seq = 6;
        b.put_scope(&integrated)
            .put_event_block(SCOPE, &[event(1), event(2)])
            .put_event_block(SCOPE, &[event(3), event(4), event(5), event(6)]);
    });

    let report = world.verify();

    assert!(report.is_ok(), "{report}");
    assert_eq!(report.members, 5);
}

fn event(seq: u64) -> EventRecord {
    EventRecord {
        scope_id: SCOPE,
        seq,
        payload: "{}".to_owned(),
    }
}

#[test]
fn two_members_with_one_external_id_are_reported() {
    let world = world();
    // Member 105 claims 103's identity.
    let mut twin = member(105, MAAC, None);
    twin.external_member_id = "ext-103".to_owned();
    world.journal(MAAC, &[put(&twin)]);

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::DuplicateIdentity {
            org_id: MAAC,
            channel_id: None,
            external_member_id: "ext-103".to_owned(),
            member_ids: (103, 105),
        }]
    );
    assert_one_line_each(&report);
}

#[test]
fn one_external_id_on_two_channels_or_orgs_is_no_duplicate() {
    let world = world();
    let mut other_channel = member(105, CAAC, None);
    other_channel.channel_id = Some(21);
    other_channel.external_member_id = "ext-100".to_owned();
    let mut other_org = member(106, MAAC, None);
    other_org.external_member_id = "ext-104".to_owned();
    world.put(|b| {
        b.put_channel(&channel(21, CAAC));
    });
    world.journal(CAAC, &[put(&other_channel)]);
    world.journal(MAAC, &[put(&other_org)]);

    let report = world.verify();

    assert!(report.is_ok(), "{report}");
}

#[test]
fn two_members_with_one_username_are_reported() {
    let world = world();
    let mut bob = world.member(CAAC, 102);
    bob.username = Some("ann".to_owned());
    world.journal(CAAC, &[put(&bob)]);

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::DuplicateUsername {
            org_id: CAAC,
            username: "ann".to_owned(),
            member_ids: (100, 102),
        }]
    );
    assert_one_line_each(&report);

    // Once ann gives the name up, bob may hold it.
    let mut ann = world.member(CAAC, 100);
    ann.username = None;
    world.journal(CAAC, &[put(&ann)]);
    assert!(world.verify().is_ok());
}

#[test]
fn member_channel_and_source_rules_are_checked() {
    let world = world();
    let mut no_channel = world.member(CAAC, 102);
    no_channel.channel_id = None;
    let mut with_channel = world.member(MAAC, 103);
    with_channel.channel_id = Some(CHANNEL);
    let mut wrong_source = world.member(MAAC, 101);
    wrong_source.source = Source::Caac;
    let mut unknown_channel = member(105, CAAC, None);
    unknown_channel.channel_id = Some(99);
    let mut foreign_channel = member(106, CAAC, None);
    foreign_channel.channel_id = Some(22);
    world.put(|b| {
        b.put_channel(&channel(22, LONE));
    });
    world.journal(
        CAAC,
        &[
            put(&no_channel),
            put(&unknown_channel),
            put(&foreign_channel),
        ],
    );
    world.journal(MAAC, &[put(&with_channel), put(&wrong_source)]);

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![
            Problem::CaacMemberWithoutChannel {
                member_id: 102,
                org_id: CAAC,
            },
            Problem::MemberChannelMissing {
                member_id: 105,
                channel_id: 99,
            },
            Problem::MemberChannelOfOtherOrg {
                member_id: 106,
                org_id: CAAC,
                channel_id: 22,
                channel_org_id: LONE,
            },
            Problem::MemberSourceMismatch {
                member_id: 101,
                member_source: Source::Caac,
                org_id: MAAC,
                org_source: Source::Maac,
            },
            Problem::MaacMemberWithChannel {
                member_id: 103,
                org_id: MAAC,
                channel_id: CHANNEL,
            },
        ],
        "{report}"
    );
    assert_one_line_each(&report);
}

#[test]
fn member_in_another_orgs_log_is_reported() {
    let world = world();
    // 105 belongs to org 77, which does not exist; 106 to CAAC, but both sit in MAAC's log.
    let orphan = member(105, 77, None);
    let mut stray = member(106, CAAC, None);
    stray.channel_id = Some(CHANNEL);
    world.journal(MAAC, &[put(&orphan), put(&stray)]);

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![
            Problem::ForeignMember {
                org_id: MAAC,
                member_id: 105,
                member_org_id: 77,
            },
            Problem::MemberOrgMissing {
                member_id: 105,
                org_id: 77,
            },
            Problem::ForeignMember {
                org_id: MAAC,
                member_id: 106,
                member_org_id: CAAC,
            },
        ],
        "{report}"
    );
    assert_one_line_each(&report);
}

#[test]
fn the_log_of_an_org_without_a_record_is_checked() {
    let world = world();
    // Org 77 has no record, but members were journaled under it.
    world.journal(77, &[put(&member(105, 77, None))]);

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::MemberOrgMissing {
            member_id: 105,
            org_id: 77,
        }],
        "{report}"
    );
    assert_eq!(report.members, 6);
}

#[test]
fn persisted_linking_values_that_differ_from_a_fresh_normalization_are_reported() {
    let world = world();
    let bob = world.member(CAAC, 102);
    let mut wrong = links_of(&bob);
    let email = unify_actors::engine::Attribute::DisplayEmail.index();
    wrong.values[email] = Some("eve@example.com".to_owned());
    // Values under another normalizer configuration are recomputed at load: no problem.
    let ann = world.member(MAAC, 101);
    let other = MemberLinks {
        normalizer: Normalizer::default().fingerprint() ^ 1,
        values: vec![None; 6],
    };
    world.journal(CAAC, &[MemberWrite::Put(StoredMember::new(&bob, &wrong))]);
    world.journal(MAAC, &[MemberWrite::Put(StoredMember::new(&ann, &other))]);

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::StaleLinkValues {
            member_id: 102,
            attribute: unify_actors::engine::Attribute::DisplayEmail,
            persisted: Some("eve@example.com".to_owned()),
            fresh: Some("bob@example.com".to_owned()),
        }],
        "{report}"
    );
    assert_one_line_each(&report);
}

#[test]
fn member_counter_behind_a_member_is_reported() {
    let world = world();
    // Journaled without raising the counter: the next allocation would hand 500 out again.
    world.put(|b| {
        b.append_journal(LONE, 2, &[put(&member(500, LONE, None))]);
    });

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::CounterBehind {
            kind: "member",
            counter: 104,
            in_use: 500,
        }]
    );
    assert_one_line_each(&report);
    world.store.raise_counter(IdKind::Member, 500).unwrap();
    assert!(world.verify().is_ok());
}

#[test]
fn event_blocks_out_of_order_are_reported() {
    let world = world();
    let mut integrated = scope(SCOPE, vec![CAAC, MAAC], &["display_email"]);
    integrated.last_seq = 8;
    world.put(|b| {
        b.put_scope(&integrated)
            .put_event_block(SCOPE, &[event(1), event(2), event(3)])
            // Overlaps 1..=3.
            .put_event_block(SCOPE, &[event(3), event(4)])
            // Reversed.
            .put_event_block(SCOPE, &[event(7), event(5)])
            // Past the scope's last seq.
            .put_event_block(SCOPE, &[event(8), event(9)]);
    });

    let report = world.verify();

    let messages: Vec<&str> = report
        .problems
        .iter()
        .map(|p| match p {
            Problem::EventBlocksInconsistent { scope_id, message } => {
                assert_eq!(*scope_id, SCOPE);
                message.as_str()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(messages.len(), 3, "{report}");
    assert!(messages[0].contains("3..=4 overlaps"), "{report}");
    assert!(messages[1].contains("7..=5 is reversed"), "{report}");
    assert!(
        messages[2].contains("8..=9 runs past the last seq 8"),
        "{report}"
    );
    assert_one_line_each(&report);
}

#[test]
fn org_log_with_a_missing_journal_record_is_reported() {
    let world = world();
    // Record 2 of MAAC is missing: record 3 follows record 1.
    world.put(|b| {
        b.append_journal(MAAC, 3, &[MemberWrite::Delete(103)]);
    });
    // A problem in another org is still found.
    let mut bob = world.member(CAAC, 102);
    bob.channel_id = None;
    world.journal(CAAC, &[put(&bob)]);

    let report = world.verify();

    assert_eq!(report.problems.len(), 2, "{report}");
    assert_eq!(
        report.problems[0],
        Problem::CaacMemberWithoutChannel {
            member_id: 102,
            org_id: CAAC,
        }
    );
    assert!(
        matches!(&report.problems[1], Problem::OrgLogCorrupt { org_id: MAAC, message } if message.contains("journal record 2")),
        "{report}"
    );
    assert_eq!(report.members, 3, "MAAC's members cannot be counted");
    assert_one_line_each(&report);
}

#[test]
fn garbled_journal_record_is_reported() {
    let world = world();
    world
        .store
        .raw_insert_for_tests(&keys::journal(LONE, 2), &[codec::FORMAT_VERSION, 9, 9])
        .unwrap();

    let report = world.verify();

    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        matches!(
            &report.problems[0],
            Problem::OrgLogCorrupt { org_id: LONE, .. }
        ),
        "{report}"
    );
}

#[test]
fn snapshot_lacking_a_chunk_is_reported() {
    let world = world();
    let members: Vec<StoredMember> = world
        .store
        .read_org(LONE)
        .unwrap()
        .replay()
        .unwrap()
        .into_values()
        .collect();
    let manifest = world
        .store
        .write_snapshot(LONE, 1, &mut members.into_iter())
        .unwrap();
    // A manifest that names one chunk more than was written.
    let broken = unify_storage::SnapshotManifest {
        chunks: manifest.chunks + 1,
        ..manifest
    };
    world
        .store
        .raw_insert_for_tests(&keys::snapshot(LONE), &codec::encode(&broken))
        .unwrap();

    let report = world.verify();

    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        matches!(&report.problems[0], Problem::OrgLogCorrupt { org_id: LONE, message } if message.contains("lacks chunk 1")),
        "{report}"
    );
}

#[test]
fn org_pointing_at_a_missing_scope_is_reported() {
    let world = world();
    world.put(|b| {
        b.put_org(&org(LONE, Source::Maac, 99));
    });

    let report = world.verify();

    assert!(
        report.problems.contains(&Problem::OrgScopeMissing {
            org_id: LONE,
            scope_id: 99,
        }),
        "{report}"
    );
    // Scope 2 still lists the org, which now names another scope.
    assert!(report.problems.contains(&Problem::ScopeOrgElsewhere {
        scope_id: LONE_SCOPE,
        org_id: LONE,
        org_scope_id: 99,
    }));
    assert_eq!(report.problems.len(), 2, "{report}");
    assert_one_line_each(&report);
}

#[test]
fn org_listed_by_two_scopes_is_reported() {
    let world = world();
    world.put(|b| {
        b.put_scope(&scope(LONE_SCOPE, vec![MAAC, LONE], &[]));
    });

    let report = world.verify();

    assert!(
        report.problems.contains(&Problem::OrgInSeveralScopes {
            org_id: MAAC,
            scope_ids: vec![SCOPE, LONE_SCOPE],
        }),
        "{report}"
    );
    assert!(report.problems.contains(&Problem::ScopeOrgElsewhere {
        scope_id: LONE_SCOPE,
        org_id: MAAC,
        org_scope_id: SCOPE,
    }));
}

#[test]
fn scope_listing_a_missing_org_is_reported() {
    let world = world();
    world.put(|b| {
        b.put_scope(&scope(LONE_SCOPE, vec![LONE, 88], &[]));
    });

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::ScopeOrgMissing {
            scope_id: LONE_SCOPE,
            org_id: 88,
        }]
    );
}

#[test]
fn invalid_scope_keys_are_reported() {
    let world = world();
    world.put(|b| {
        b.put_scope(&scope(LONE_SCOPE, vec![LONE], &["nickname"]));
    });

    let report = world.verify();

    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        matches!(
            &report.problems[0],
            Problem::InvalidScopeKeys {
                scope_id: LONE_SCOPE,
                ..
            }
        ),
        "{report}"
    );
    assert!(report.problems[0].to_string().contains("nickname"));
}

#[test]
fn scope_with_a_pending_job_is_a_note_not_a_problem() {
    let world = world();
    // Mid re-unification (new keys): the partition is not checked until the job commits.
    let mut pending = scope(SCOPE, vec![CAAC, MAAC], &["display_email", "nickname"]);
    pending.pending_job = Some(PendingJob {
        kind: JobKind::KeysChanged,
        scheduled_at: 1,
    });
    world.put(|b| {
        b.put_scope(&pending);
    });

    let report = world.verify();

    // Invalid keys are still a problem; the note is the pending job.
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(matches!(
        &report.problems[0],
        Problem::InvalidScopeKeys {
            scope_id: SCOPE,
            ..
        }
    ));
    assert_eq!(report.pending_jobs, vec![SCOPE]);
    assert!(
        report
            .to_string()
            .contains("scope 1 has a pending re-unification job")
    );
}

#[test]
fn undecodable_member_is_an_error_not_a_problem() {
    let world = world();
    // The journal record frames well; the member inside it does not decode.
    world.put(|b| {
        b.append_journal(
            MAAC,
            2,
            &[MemberWrite::Put(StoredMember::from_bytes(&[
                codec::FORMAT_VERSION,
                0xff,
            ]))],
        );
    });

    let err = verify(&world.store, &Normalizer::default(), Limits::default()).unwrap_err();

    assert!(matches!(err, StoreError::Codec(_)), "{err:?}");
}

#[test]
fn report_survives_a_reopen() {
    // Verification reads only what is durable: the same verdict after closing the store.
    let world = world();
    let dir = world.dir;
    drop(world.store);

    let store = Store::open(dir.path()).unwrap();
    let report = verify(&store, &Normalizer::default(), Limits::default()).unwrap();

    assert!(report.is_ok(), "{report}");
    assert_eq!(report.members, 5);
}
