//! `unify verify` against a real sled store: a consistent world passes, and each kind of
//! corruption an operator could meet is reported as a problem rather than a crash.

use tempfile::TempDir;
use unify_actors::engine::{Limits, Normalizer, Unifier};
use unify_actors::links::{member_links, scope_keys};
use unify_actors::verify::{MAX_MISMATCHES_PER_SCOPE, Problem, VerifyReport, verify};
use unify_storage::{
    Channel, Id, JobKind, Member, Org, PendingJob, ScopeRecord, Source, Store, StoreError,
    UnifyKeyRecord, WriteBatch, codec, keys,
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
        id,
        org_id,
        source,
        channel_id,
        external_member_id: format!("ext-{id}"),
        original_name: None,
        display_name: None,
        username: None,
        display_email: email.map(str::to_owned),
        display_mobile: None,
        custom_id: None,
        line_id: None,
        connect_id: None,
        manual_unification: false,
        profile_id: 0,
        last_message_at: None,
        created_at: 0,
        updated_at: 0,
    }
}

/// Sets each member's `profile_id` to what the engine computes for the scope.
fn unify(scope: &ScopeRecord, members: &mut [Member]) {
    let normalizer = Normalizer::default();
    let unifier = Unifier::from_members(
        scope_keys(scope).unwrap(),
        Limits::default(),
        members.iter().map(|m| (m.id, member_links(&normalizer, m))),
    );
    for m in members {
        m.profile_id = unifier.profile_of(m.id).unwrap();
    }
}

/// Writes a consistent world: scope 1 joins a caac org (one channel) and a maac org and links
/// by display_email; scope 2 holds a lone maac org without keys.
///
/// Members 100 and 101 share an email (written differently) and form profile 100; 102 and 103
/// are alone; 104 is the lone org's only member.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();

    let integrated = scope(SCOPE, vec![CAAC, MAAC], &["display_email"]);
    let lone = scope(LONE_SCOPE, vec![LONE], &[]);
    let mut members = vec![
        member(100, CAAC, Some("ann@example.com")),
        member(101, MAAC, Some(" ANN@Example.com ")),
        member(102, CAAC, Some("bob@example.com")),
        member(103, MAAC, None),
    ];
    members[0].username = Some("ann".to_owned());
    unify(&integrated, &mut members);
    let mut lone_members = vec![member(104, LONE, Some("ann@example.com"))];
    unify(&lone, &mut lone_members);

    let mut batch = WriteBatch::new();
    batch
        .put_scope(&integrated)
        .put_scope(&lone)
        .put_org(&org(CAAC, Source::Caac, SCOPE))
        .put_org(&org(MAAC, Source::Maac, SCOPE))
        .put_org(&org(LONE, Source::Maac, LONE_SCOPE))
        .put_channel(&Channel {
            id: CHANNEL,
            org_id: CAAC,
            name: "line".to_owned(),
            channel_type: "line".to_owned(),
            tenant_key: None,
            auto_provision: false,
            contact_api: None,
            webhook_secret: "secret".to_owned(),
            created_at: 0,
            updated_at: 0,
        })
        .put_username(CAAC, "ann", 100);
    for m in members.iter().chain(&lone_members) {
        batch.put_member(m);
    }
    store.apply(batch).unwrap();
    store.flush().unwrap();
    World { store, dir }
}

impl World {
    fn verify(&self) -> VerifyReport {
        verify(&self.store, &Normalizer::default(), Limits::default()).unwrap()
    }

    fn member(&self, id: Id) -> Member {
        self.store.get_member(id).unwrap()
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
    assert_eq!(
        world.member(101).profile_id,
        100,
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
fn wrong_stored_profile_is_reported() {
    let world = world();
    let mut bob = world.member(102);
    bob.profile_id = 100;
    world.put(|b| {
        b.put_member(&bob);
    });

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::ProfileMismatch {
            scope_id: SCOPE,
            member_id: 102,
            stored: 100,
            expected: 102,
        }]
    );
    assert_one_line_each(&report);
    assert!(report.problems[0].to_string().contains("member 102"));
}

#[test]
fn stale_profile_after_an_unrecomputed_edit_is_reported() {
    // Member 101 changed email but nothing recomputed its profile: 100 and 101 no longer link.
    let world = world();
    let mut changed = world.member(101);
    changed.display_email = Some("carol@example.com".to_owned());
    world.put(|b| {
        b.put_member(&changed);
    });

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::ProfileMismatch {
            scope_id: SCOPE,
            member_id: 101,
            stored: 100,
            expected: 101,
        }]
    );
}

#[test]
fn mismatches_beyond_the_cap_are_counted_not_listed() {
    let world = world();
    let extra = MAX_MISMATCHES_PER_SCOPE as Id + 5;
    world.put(|b| {
        for id in 200..200 + extra {
            let mut m = member(id, LONE, None);
            m.profile_id = 104;
            b.put_member(&m);
        }
    });

    let report = world.verify();

    let listed = report
        .problems
        .iter()
        .filter(|p| {
            matches!(
                p,
                Problem::ProfileMismatch {
                    scope_id: LONE_SCOPE,
                    ..
                }
            )
        })
        .count();
    assert_eq!(listed, MAX_MISMATCHES_PER_SCOPE);
    assert!(report.problems.contains(&Problem::MoreProfileMismatches {
        scope_id: LONE_SCOPE,
        count: 5,
    }));
    assert_eq!(report.problems.len(), MAX_MISMATCHES_PER_SCOPE + 1);
}

#[test]
fn member_without_its_external_id_index_entry_is_reported() {
    let world = world();
    // Written as a raw record plus its org-members entry, leaving out the by-ext entry.
    let mut m = member(105, MAAC, None);
    m.profile_id = 105;
    world
        .store
        .raw_insert_for_tests(&keys::member(105), &codec::encode(&m))
        .unwrap();
    world
        .store
        .raw_insert_for_tests(&keys::org_member(MAAC, 105), &[])
        .unwrap();

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::ExtIndexMismatch {
            member_id: 105,
            org_id: MAAC,
            channel_id: None,
            external_member_id: "ext-105".to_owned(),
            found: None,
        }]
    );
    assert_one_line_each(&report);
}

#[test]
fn two_members_with_one_external_id_are_reported() {
    let world = world();
    // Member 105 claims 103's identity; the index can point at only one of them.
    let mut twin = member(105, MAAC, None);
    twin.external_member_id = "ext-103".to_owned();
    twin.profile_id = 105;
    world.put(|b| {
        b.put_member(&twin);
    });

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::ExtIndexMismatch {
            member_id: 103,
            org_id: MAAC,
            channel_id: None,
            external_member_id: "ext-103".to_owned(),
            found: Some(105),
        }]
    );
}

#[test]
fn member_missing_from_the_org_members_index_is_reported() {
    let world = world();
    let mut m = member(105, MAAC, None);
    m.profile_id = 105;
    world
        .store
        .raw_insert_for_tests(&keys::member(105), &codec::encode(&m))
        .unwrap();
    world
        .store
        .raw_insert_for_tests(
            &keys::member_by_ext(MAAC, None, "ext-105"),
            &105u64.to_be_bytes(),
        )
        .unwrap();

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::OrgIndexMissingMember {
            org_id: MAAC,
            member_id: 105,
        }]
    );
}

#[test]
fn username_index_pointing_elsewhere_is_reported() {
    let world = world();
    world.put(|b| {
        b.put_username(CAAC, "ann", 102);
    });

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![
            Problem::UsernameIndexMismatch {
                member_id: 100,
                org_id: CAAC,
                username: "ann".to_owned(),
                found: Some(102),
            },
            Problem::StaleUsernameIndex {
                org_id: CAAC,
                username: "ann".to_owned(),
                member_id: 102,
            },
        ]
    );
}

#[test]
fn stale_index_entries_are_reported() {
    let world = world();
    // Left behind by a lost delete: entries naming a member that does not exist, or one with
    // another identity.
    world
        .store
        .raw_insert_for_tests(
            &keys::member_by_ext(MAAC, None, "gone"),
            &999u64.to_be_bytes(),
        )
        .unwrap();
    world.put(|b| {
        b.put_username(CAAC, "old-name", 100);
    });

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![
            Problem::StaleExtIndex {
                org_id: MAAC,
                channel_id: None,
                external_member_id: "gone".to_owned(),
                member_id: 999,
            },
            Problem::StaleUsernameIndex {
                org_id: CAAC,
                username: "old-name".to_owned(),
                member_id: 100,
            },
        ]
    );
    assert_one_line_each(&report);
}

#[test]
fn member_channel_and_source_rules_are_checked() {
    let world = world();
    let mut no_channel = world.member(102);
    no_channel.channel_id = None;
    let mut with_channel = world.member(103);
    with_channel.channel_id = Some(CHANNEL);
    let mut wrong_source = world.member(101);
    wrong_source.source = Source::Caac;
    let mut unknown_channel = member(105, CAAC, None);
    unknown_channel.channel_id = Some(99);
    unknown_channel.profile_id = 105;
    let (old_102, old_103) = (world.member(102), world.member(103));
    world.put(|b| {
        // Deleting the old records first moves the index entries along with the channel.
        b.delete_member(&old_102).delete_member(&old_103);
        for m in [&no_channel, &with_channel, &wrong_source, &unknown_channel] {
            b.put_member(m);
        }
    });

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![
            Problem::MemberSourceMismatch {
                member_id: 101,
                member_source: Source::Caac,
                org_id: MAAC,
                org_source: Source::Maac,
            },
            Problem::CaacMemberWithoutChannel {
                member_id: 102,
                org_id: CAAC,
            },
            Problem::MaacMemberWithChannel {
                member_id: 103,
                org_id: MAAC,
                channel_id: CHANNEL,
            },
            Problem::MemberChannelMissing {
                member_id: 105,
                channel_id: 99,
            },
        ],
        "{report}"
    );
    assert_one_line_each(&report);
}

#[test]
fn member_of_a_missing_org_is_reported() {
    let world = world();
    let mut orphan = member(105, 77, None);
    orphan.profile_id = 105;
    world.put(|b| {
        b.put_member(&orphan);
    });

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::MemberOrgMissing {
            member_id: 105,
            org_id: 77,
        }]
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
    // Mid re-unification: the stored partition mixes old and new profiles.
    let mut pending = scope(SCOPE, vec![CAAC, MAAC], &["display_email"]);
    pending.pending_job = Some(PendingJob {
        kind: JobKind::KeysChanged,
        scheduled_at: 1,
    });
    let mut bob = world.member(102);
    bob.profile_id = 100;
    world.put(|b| {
        b.put_scope(&pending).put_member(&bob);
    });

    let report = world.verify();

    assert!(report.is_ok(), "{report}");
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
    world
        .store
        .raw_insert_for_tests(&keys::member(105), &[codec::FORMAT_VERSION, 0xff])
        .unwrap();

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

#[test]
fn org_members_index_naming_a_missing_member_is_reported() {
    let world = world();
    world
        .store
        .raw_insert_for_tests(&keys::org_member(MAAC, 150), &[])
        .unwrap();

    let report = world.verify();

    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        matches!(
            &report.problems[0],
            Problem::OrgIndexCorrupt { org_id: MAAC, .. }
        ),
        "{report}"
    );
    assert_one_line_each(&report);
}

#[test]
fn org_members_index_listing_another_orgs_member_is_reported() {
    let world = world();
    world
        .store
        .raw_insert_for_tests(&keys::org_member(LONE, 100), &[])
        .unwrap();

    let report = world.verify();

    assert_eq!(
        report.problems,
        vec![Problem::OrgIndexForeignMember {
            org_id: LONE,
            member_id: 100,
            member_org_id: CAAC,
        }]
    );
}

#[test]
fn members_before_a_corrupt_org_members_entry_are_still_checked() {
    let world = world();
    // Org 11 lists 101, 105, then 106 (no such member), then 107; 103 is not listed.
    world.put(|b| {
        for id in [105, 107] {
            let mut m = member(id, MAAC, None);
            m.profile_id = id;
            b.put_member(&m);
        }
        b.delete_member(&world.member(103));
    });
    let unlisted = Member {
        profile_id: 103,
        ..member(103, MAAC, None)
    };
    world
        .store
        .raw_insert_for_tests(&keys::member(103), &codec::encode(&unlisted))
        .unwrap();
    world
        .store
        .raw_insert_for_tests(
            &keys::member_by_ext(MAAC, None, "ext-103"),
            &103u64.to_be_bytes(),
        )
        .unwrap();
    world
        .store
        .raw_insert_for_tests(&keys::org_member(MAAC, 106), &[])
        .unwrap();

    let report = world.verify();

    assert_eq!(report.problems.len(), 2, "{report}");
    assert!(
        matches!(&report.problems[0], Problem::OrgIndexCorrupt { org_id: MAAC, message } if message.contains("106")),
        "{report}"
    );
    assert_eq!(
        report.problems[1],
        Problem::OrgIndexMissingMember {
            org_id: MAAC,
            member_id: 103,
        }
    );
}
