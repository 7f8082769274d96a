//! Worked examples of each rule of SPEC 2 and the properties that prove the law
//! "incremental maintenance equals a full rebuild".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use Attribute::*;

fn normalizer() -> &'static Normalizer {
    static N: OnceLock<Normalizer> = OnceLock::new();
    N.get_or_init(Normalizer::default)
}

/// Raw attribute values of a member, by attribute index.
type Raw = [Option<String>; ATTRIBUTE_COUNT];

fn links(raw: &Raw, manual: bool) -> LinkValues {
    let refs: [Option<&str>; ATTRIBUTE_COUNT] = std::array::from_fn(|i| raw[i].as_deref());
    LinkValues::normalize(normalizer(), &refs, manual)
}

fn member(pairs: &[(Attribute, &str)]) -> LinkValues {
    let mut raw: Raw = Default::default();
    for (a, v) in pairs {
        raw[a.index()] = Some((*v).to_owned());
    }
    links(&raw, false)
}

fn key(attribute: Attribute, is_distinct: bool) -> UnifyKey {
    UnifyKey {
        attribute,
        is_distinct,
    }
}

fn scope(keys: Vec<UnifyKey>, limits: Limits, members: Vec<(MemberId, LinkValues)>) -> Unifier {
    Unifier::from_members(KeySet::new(keys).unwrap(), limits, members)
}

fn profiles(u: &Unifier) -> Vec<(MemberId, ProfileId)> {
    u.partition().collect()
}

#[test]
fn without_keys_every_member_is_its_own_profile() {
    let u = scope(
        vec![],
        Limits::default(),
        vec![
            (1, member(&[(DisplayEmail, "a@x.com")])),
            (2, member(&[(DisplayEmail, "a@x.com")])),
        ],
    );
    assert_eq!(profiles(&u), vec![(1, 1), (2, 2)]);
}

#[test]
fn shared_normalized_values_link_transitively() {
    // 1 and 2 share an email written differently; 2 and 3 share a mobile in two notations.
    let u = scope(
        vec![key(DisplayEmail, false), key(DisplayMobile, false)],
        Limits::default(),
        vec![
            (1, member(&[(DisplayEmail, "Kevin@Example.com")])),
            (
                2,
                member(&[
                    (DisplayEmail, " kevin@example.com"),
                    (DisplayMobile, "0912345678"),
                ]),
            ),
            (3, member(&[(DisplayMobile, "+886 912 345 678")])),
            (4, member(&[(DisplayMobile, "0922333444")])),
        ],
    );
    assert_eq!(profiles(&u), vec![(1, 1), (2, 1), (3, 1), (4, 4)]);
    assert_eq!(u.profile_members(3), vec![1, 2, 3]);
}

#[test]
fn different_distinct_values_refuse_the_link() {
    // custom_id is distinct: 1 (C1) and 2 (C2) share an email but cannot merge;
    // 3 has no custom id and joins the profile that owns the email node, 1's.
    let u = scope(
        vec![key(DisplayEmail, false), key(CustomId, true)],
        Limits::default(),
        vec![
            (1, member(&[(DisplayEmail, "a@x.com"), (CustomId, "C1")])),
            (2, member(&[(DisplayEmail, "a@x.com"), (CustomId, "C2")])),
            (3, member(&[(DisplayEmail, "a@x.com")])),
        ],
    );
    assert_eq!(profiles(&u), vec![(1, 1), (2, 2), (3, 1)]);
    let why = u.explain(1, 2).unwrap();
    assert!(!why.same_profile);
    let refused = why.refused.unwrap();
    assert_eq!(refused.member_id, 2);
    assert_eq!(refused.attribute, DisplayEmail);
    assert_eq!(refused.value, "a@x.com");
    assert_eq!(refused.reason, Refusal::DistinctConflict);
    assert_eq!((refused.profile_id, refused.other_profile_id), (2, 1));
}

#[test]
fn key_priority_decides_which_side_a_bridge_member_joins() {
    // 3 holds 1's email and 2's mobile; 1 and 2 have different distinct custom ids.
    let members = || {
        vec![
            (1, member(&[(DisplayEmail, "a@x.com"), (CustomId, "C1")])),
            (
                2,
                member(&[(DisplayMobile, "0912345678"), (CustomId, "C2")]),
            ),
            (
                3,
                member(&[(DisplayEmail, "a@x.com"), (DisplayMobile, "0912345678")]),
            ),
        ]
    };
    let email_first = scope(
        vec![
            key(DisplayEmail, false),
            key(DisplayMobile, false),
            key(CustomId, true),
        ],
        Limits::default(),
        members(),
    );
    assert_eq!(profiles(&email_first), vec![(1, 1), (2, 2), (3, 1)]);
    let mobile_first = scope(
        vec![
            key(DisplayMobile, false),
            key(DisplayEmail, false),
            key(CustomId, true),
        ],
        Limits::default(),
        members(),
    );
    assert_eq!(profiles(&mobile_first), vec![(1, 1), (2, 2), (3, 2)]);
}

#[test]
fn a_distinct_value_that_does_not_link_counts_as_none() {
    // "null" is blocked, so 2 has no distinct value and may join 1.
    let u = scope(
        vec![key(DisplayEmail, false), key(CustomId, true)],
        Limits::default(),
        vec![
            (1, member(&[(DisplayEmail, "a@x.com"), (CustomId, "C1")])),
            (2, member(&[(DisplayEmail, "a@x.com"), (CustomId, "null")])),
        ],
    );
    assert_eq!(profiles(&u), vec![(1, 1), (2, 1)]);
}

#[test]
fn max_profile_size_refuses_merges_beyond_it() {
    let limits = Limits {
        max_members_per_value: 1000,
        max_profile_size: 2,
    };
    let u = scope(
        vec![key(DisplayEmail, false)],
        limits,
        (1..=3)
            .map(|id| (id, member(&[(DisplayEmail, "a@x.com")])))
            .collect(),
    );
    assert_eq!(profiles(&u), vec![(1, 1), (2, 1), (3, 3)]);
    let refused = u.explain(3, 1).unwrap().refused.unwrap();
    assert_eq!(refused.reason, Refusal::MaxProfileSize);
}

#[test]
fn hot_values_do_not_link_and_are_listed() {
    let limits = Limits {
        max_members_per_value: 2,
        max_profile_size: 10_000,
    };
    let mut u = scope(
        vec![key(DisplayEmail, false), key(CustomId, false)],
        limits,
        vec![
            (
                1,
                member(&[(DisplayEmail, "shared@x.com"), (CustomId, "C1")]),
            ),
            (2, member(&[(DisplayEmail, "shared@x.com")])),
            (
                3,
                member(&[(DisplayEmail, "shared@x.com"), (CustomId, "C1")]),
            ),
        ],
    );
    assert_eq!(profiles(&u), vec![(1, 1), (2, 2), (3, 1)]);
    assert_eq!(
        u.hot_values(),
        vec![HotValue {
            attribute: DisplayEmail,
            value: "shared@x.com".into(),
            members: 3
        }]
    );
    // Dropping below the limit makes the value link again, recomputing the scope.
    let delta = u.remove(3);
    assert!(delta.full);
    assert_eq!(profiles(&u), vec![(1, 1), (2, 1)]);
    assert!(u.hot_values().is_empty());
}

#[test]
fn external_member_ids_are_interned_only_once_they_are_a_key() {
    let raw = |ext: &str, email: &str| {
        let mut raw: Raw = Default::default();
        raw[ExternalMemberId.index()] = Some(ext.to_owned());
        raw[DisplayEmail.index()] = Some(email.to_owned());
        raw
    };
    let members = [
        (1, raw("U1", "a@x.com")),
        (2, raw("U1", "b@x.com")),
        (3, raw("U3", "a@x.com")),
    ];
    let mut u = scope(
        vec![key(DisplayEmail, false)],
        Limits::default(),
        members
            .iter()
            .map(|(id, r)| (*id, links(r, false)))
            .collect(),
    );
    // Two email nodes, no external id node.
    assert_eq!(u.nodes.len(), 2);
    assert_eq!(u.link_values(1).unwrap().0[ExternalMemberId.index()], None);
    assert_eq!(profiles(&u), vec![(1, 1), (2, 2), (3, 1)]);
    let by_external = KeySet::plain(&[DisplayEmail, ExternalMemberId]).unwrap();
    assert!(u.needs_external(&by_external));
    u.intern_external(
        members
            .iter()
            .map(|(id, r)| (*id, r[ExternalMemberId.index()].clone())),
    );
    assert!(!u.needs_external(&by_external));
    assert_eq!(u.nodes.len(), 4);
    // Interning changes no profile; the keys do.
    assert_eq!(profiles(&u), vec![(1, 1), (2, 2), (3, 1)]);
    let report = u.dry_run(&by_external);
    assert_eq!(report.profiles_after, 1);
    u.set_keys(by_external);
    assert_eq!(profiles(&u), vec![(1, 1), (2, 1), (3, 1)]);
    // New members now intern theirs, and a rebuild agrees.
    u.upsert(4, &links(&raw("U3", "c@x.com"), false));
    assert_eq!(u.profile_of(4), Some(1));
    let rebuilt = Unifier::from_members(
        u.keys().clone(),
        Limits::default(),
        members
            .iter()
            .cloned()
            .chain([(4, raw("U3", "c@x.com"))])
            .map(|(id, r)| (id, links(&r, false))),
    );
    assert_eq!(profiles(&rebuilt), profiles(&u));
}

#[test]
fn manual_unification_stops_external_member_id_from_linking() {
    let raw = |ext: &str| {
        let mut raw: Raw = Default::default();
        raw[ExternalMemberId.index()] = Some(ext.to_owned());
        raw
    };
    let mut u = scope(
        vec![key(ExternalMemberId, false)],
        Limits::default(),
        vec![
            (1, links(&raw("on_x"), false)),
            (2, links(&raw("on_x"), false)),
        ],
    );
    assert_eq!(profiles(&u), vec![(1, 1), (2, 1)]);
    let delta = u.upsert(2, &links(&raw("on_x"), true));
    assert_eq!(
        delta.moves,
        vec![Move {
            member: 2,
            from: Some(1),
            to: Some(2)
        }]
    );
    assert_eq!(profiles(&u), vec![(1, 1), (2, 2)]);
}

#[test]
fn deleting_a_bridge_member_splits_the_profile() {
    let mut u = scope(
        vec![key(DisplayEmail, false), key(DisplayMobile, false)],
        Limits::default(),
        vec![
            (1, member(&[(DisplayEmail, "a@x.com")])),
            (
                2,
                member(&[(DisplayEmail, "a@x.com"), (DisplayMobile, "0912345678")]),
            ),
            (3, member(&[(DisplayMobile, "0912345678")])),
        ],
    );
    assert_eq!(profiles(&u), vec![(1, 1), (2, 1), (3, 1)]);
    let delta = u.remove(2);
    assert!(!delta.full);
    assert_eq!(
        delta.moves,
        vec![
            Move {
                member: 2,
                from: Some(1),
                to: None
            },
            Move {
                member: 3,
                from: Some(1),
                to: Some(3)
            }
        ]
    );
    assert_eq!(profiles(&u), vec![(1, 1), (3, 3)]);
}

#[test]
fn an_out_of_order_id_is_placed_by_id() {
    let mut u = scope(
        vec![key(DisplayEmail, false)],
        Limits::default(),
        vec![(5, member(&[(DisplayEmail, "a@x.com")]))],
    );
    let delta = u.upsert(3, &member(&[(DisplayEmail, "a@x.com")]));
    assert_eq!(profiles(&u), vec![(3, 3), (5, 3)]);
    assert_eq!(delta.moves.len(), 2);
}

#[test]
fn explain_shows_the_shortest_chain_inside_a_profile() {
    let u = scope(
        vec![key(DisplayEmail, false), key(CustomId, false)],
        Limits::default(),
        vec![
            (1, member(&[(DisplayEmail, "a@x.com")])),
            (2, member(&[(DisplayEmail, "a@x.com"), (CustomId, "C1")])),
            (3, member(&[(CustomId, "C1")])),
            (4, member(&[(DisplayEmail, "z@x.com")])),
        ],
    );
    let why = u.explain(1, 3).unwrap();
    assert!(why.same_profile);
    assert_eq!(
        why.path,
        vec![
            PathStep {
                member_id: 1,
                attribute: None,
                value: None
            },
            PathStep {
                member_id: 2,
                attribute: Some(DisplayEmail),
                value: Some("a@x.com".into())
            },
            PathStep {
                member_id: 3,
                attribute: Some(CustomId),
                value: Some("C1".into())
            },
        ]
    );
    let apart = u.explain(1, 4).unwrap();
    assert!(!apart.same_profile && apart.path.is_empty() && apart.refused.is_none());
    assert!(u.explain(1, 99).is_none());
}

#[test]
fn dry_run_counts_merges_splits_and_moves_without_changing_anything() {
    let u = scope(
        vec![key(DisplayEmail, false)],
        Limits::default(),
        vec![
            (1, member(&[(DisplayEmail, "a@x.com"), (CustomId, "C1")])),
            (2, member(&[(DisplayEmail, "a@x.com")])),
            (3, member(&[(CustomId, "C1")])),
            (4, member(&[(CustomId, "C4")])),
        ],
    );
    let before = profiles(&u);
    // By custom_id only: {1,3} and {2} and {4}: profile 1 is split, 3 moves into 1.
    let report = u.dry_run(&KeySet::plain(&[CustomId]).unwrap());
    assert_eq!(
        report,
        DryRun {
            profiles_before: 3,
            profiles_after: 3,
            members_moved: 2,
            profiles_merged: 1,
            profiles_split: 1,
        }
    );
    assert_eq!(profiles(&u), before);
}

// ---------------------------------------------------------------------------------------------
// Properties.

/// Small pools so that values collide, with junk that must not link.
fn raw_strategy() -> impl Strategy<Value = Raw> {
    let pick = |pool: &'static [&'static str]| {
        proptest::option::weighted(0.6, proptest::sample::select(pool).prop_map(String::from))
    };
    (
        pick(&["a@x.com", " A@X.com", "b@x.com", "c@x.com", "bad", "null"]),
        pick(&["0912345678", "+886912345678", "0922333444", "12"]),
        pick(&["C1", "C2", " C1 ", "C3"]),
        pick(&["L1", "L2"]),
        pick(&["K1", "K2", "K3"]),
        pick(&["e1", "e2", "e3"]),
    )
        .prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f])
}

fn keys_strategy() -> impl Strategy<Value = KeySet> {
    (
        Just(Attribute::ALL.to_vec()).prop_shuffle(),
        0..=ATTRIBUTE_COUNT,
        proptest::option::of(0..ATTRIBUTE_COUNT),
    )
        .prop_map(|(attributes, n, distinct)| {
            let keys = attributes[..n]
                .iter()
                .enumerate()
                .map(|(i, &attribute)| key(attribute, distinct == Some(i)))
                .collect();
            KeySet::new(keys).unwrap()
        })
}

fn limits_strategy() -> impl Strategy<Value = Limits> {
    (1u32..=5, prop_oneof![1u32..=5, Just(10_000u32)]).prop_map(
        |(max_members_per_value, max_profile_size)| Limits {
            max_members_per_value,
            max_profile_size,
        },
    )
}

#[derive(Debug, Clone)]
enum Op {
    Create(Raw),
    /// Creates several members at once, above every id (a bulk import chunk).
    CreateMany(Vec<Raw>),
    /// Creates a member with an id below the largest, as integrate produces.
    CreateBelow(Raw),
    Update(usize, Raw),
    ChangeUnification(usize, Attribute, String),
    CancelUnification(usize),
    Release(usize),
    Delete(usize),
    SetKeys(KeySet),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => raw_strategy().prop_map(Op::Create),
        2 => proptest::collection::vec(raw_strategy(), 0..8).prop_map(Op::CreateMany),
        1 => raw_strategy().prop_map(Op::CreateBelow),
        3 => (any::<usize>(), raw_strategy()).prop_map(|(i, r)| Op::Update(i, r)),
        1 => (any::<usize>(), proptest::sample::select(&Attribute::ALL[..5]), proptest::sample::select(&["a@x.com", "0912345678", "C1", "L1", "K1"][..]))
            .prop_map(|(i, a, v)| Op::ChangeUnification(i, a, v.to_owned())),
        1 => any::<usize>().prop_map(Op::CancelUnification),
        1 => any::<usize>().prop_map(Op::Release),
        2 => any::<usize>().prop_map(Op::Delete),
        1 => keys_strategy().prop_map(Op::SetKeys),
    ]
}

/// The model of a scope: raw values and the manual flag per member.
type Model = BTreeMap<MemberId, (Raw, bool)>;

fn rebuild(keys: &KeySet, limits: Limits, model: &Model) -> Vec<(MemberId, ProfileId)> {
    let u = Unifier::from_members(
        keys.clone(),
        limits,
        model
            .iter()
            .map(|(id, (raw, manual))| (*id, links(raw, *manual))),
    );
    profiles(&u)
}

/// Applies one operation to the model and the unifier; returns the delta.
fn apply(op: Op, model: &mut Model, next_id: &mut MemberId, u: &mut Unifier) -> Delta {
    let nth = |model: &Model, i: usize| model.keys().nth(i % model.len().max(1)).copied();
    let upsert = |model: &mut Model, u: &mut Unifier, id: MemberId| {
        let (raw, manual) = &model[&id];
        u.upsert(id, &links(raw, *manual))
    };
    match op {
        Op::Create(raw) => {
            *next_id += 2;
            model.insert(*next_id, (raw, false));
            upsert(model, u, *next_id)
        }
        Op::CreateMany(raws) => {
            let ids: Vec<MemberId> = raws
                .into_iter()
                .map(|raw| {
                    *next_id += 2;
                    model.insert(*next_id, (raw, false));
                    *next_id
                })
                .collect();
            let values: Vec<LinkValues> = ids.iter().map(|id| links(&model[id].0, false)).collect();
            let members: Vec<(MemberId, &LinkValues)> = ids.iter().copied().zip(&values).collect();
            let inserted = u.insert_new(&members);
            for (profile, members) in inserted.profiles {
                assert_eq!(
                    members,
                    u.profile_members(profile),
                    "members of profile {profile}"
                );
            }
            let profile_ids: Vec<ProfileId> =
                ids.iter().map(|&id| u.profile_of(id).unwrap()).collect();
            assert_eq!(inserted.profile_ids, profile_ids);
            inserted.delta
        }
        Op::CreateBelow(raw) => match (1..*next_id).rev().find(|id| !model.contains_key(id)) {
            Some(id) => {
                model.insert(id, (raw, false));
                upsert(model, u, id)
            }
            None => Delta::default(),
        },
        Op::Update(i, raw) => match nth(model, i) {
            Some(id) => {
                model.get_mut(&id).unwrap().0 = raw;
                upsert(model, u, id)
            }
            None => Delta::default(),
        },
        Op::ChangeUnification(i, attribute, value) => match nth(model, i) {
            Some(id) => {
                let (raw, manual) = model.get_mut(&id).unwrap();
                for a in Attribute::ALL.into_iter().filter(|a| a.is_editable()) {
                    raw[a.index()] = None;
                }
                raw[attribute.index()] = Some(value);
                *manual = true;
                upsert(model, u, id)
            }
            None => Delta::default(),
        },
        Op::CancelUnification(i) => match nth(model, i) {
            Some(id) => {
                let keys = u.keys().clone();
                let (raw, manual) = model.get_mut(&id).unwrap();
                for a in keys.attributes().filter(|a| a.is_editable()) {
                    raw[a.index()] = None;
                }
                *manual = true;
                upsert(model, u, id)
            }
            None => Delta::default(),
        },
        Op::Release(i) => match nth(model, i) {
            Some(id) => {
                model.get_mut(&id).unwrap().1 = false;
                upsert(model, u, id)
            }
            None => Delta::default(),
        },
        Op::Delete(i) => match nth(model, i) {
            Some(id) => {
                model.remove(&id);
                u.remove(id)
            }
            None => Delta::default(),
        },
        Op::SetKeys(keys) => {
            if u.needs_external(&keys) {
                let external = ExternalMemberId.index();
                u.intern_external(
                    model
                        .iter()
                        .map(|(&id, (raw, manual))| (id, links(raw, *manual).0[external].clone())),
                );
            }
            u.set_keys(keys)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) After any sequence of operations the incrementally maintained partition equals a
    /// full rebuild, and every delta describes exactly the change of the partition.
    #[test]
    fn incremental_equals_rebuild(
        keys in keys_strategy(),
        limits in limits_strategy(),
        ops in proptest::collection::vec(op_strategy(), 1..60),
    ) {
        let mut u = Unifier::new(keys, limits);
        let mut model = Model::new();
        let mut next_id = 0;
        let mut seen: BTreeMap<MemberId, ProfileId> = BTreeMap::new();
        for op in ops {
            let delta = apply(op.clone(), &mut model, &mut next_id, &mut u);
            for m in &delta.moves {
                prop_assert_eq!(seen.get(&m.member).copied(), m.from, "delta of {:?}", op);
                match m.to {
                    Some(p) => seen.insert(m.member, p),
                    None => seen.remove(&m.member),
                };
            }
            let now = profiles(&u);
            prop_assert_eq!(&now, &rebuild(u.keys(), limits, &model), "after {:?}", op);
            let all: BTreeSet<ProfileId> = now.iter().map(|&(_, p)| p).collect();
            let mut members = u.members_of(all.iter().copied());
            for &p in &all {
                prop_assert_eq!(members.remove(&p).unwrap_or_default(), u.profile_members(p));
            }
            prop_assert_eq!(now, seen.iter().map(|(m, p)| (*m, *p)).collect::<Vec<_>>());
        }
    }

    /// (b) The rebuild does not depend on the order in which members were inserted, whether
    /// loaded in bulk or inserted one by one.
    #[test]
    fn rebuild_ignores_insertion_order(
        keys in keys_strategy(),
        limits in limits_strategy(),
        raws in proptest::collection::vec(raw_strategy(), 1..40)
            .prop_flat_map(|raws| Just(raws.into_iter().enumerate().collect::<Vec<_>>()).prop_shuffle()),
    ) {
        let members = |order: &[(usize, Raw)]| -> Vec<(MemberId, LinkValues)> {
            order.iter().map(|(i, raw)| (*i as MemberId + 1, links(raw, false))).collect()
        };
        let mut sorted = raws.clone();
        sorted.sort_by_key(|(i, _)| *i);
        let expected = profiles(&Unifier::from_members(keys.clone(), limits, members(&sorted)));
        let bulk = profiles(&Unifier::from_members(keys.clone(), limits, members(&raws)));
        prop_assert_eq!(&bulk, &expected);
        let mut one_by_one = Unifier::new(keys, limits);
        for (id, values) in members(&raws) {
            one_by_one.upsert(id, &values);
        }
        prop_assert_eq!(profiles(&one_by_one), expected);
    }

    /// (c) With no distinct key and no size cap, profiles are the connected components of
    /// "shares a non-hot key value", computed here naively over all pairs.
    #[test]
    fn without_distinct_key_profiles_are_connected_components(
        keys in keys_strategy(),
        max_members_per_value in 1u32..=6,
        raws in proptest::collection::vec((raw_strategy(), any::<bool>()), 1..40),
    ) {
        let keys = KeySet::plain(&keys.attributes().collect::<Vec<_>>()).unwrap();
        let limits = Limits { max_members_per_value, max_profile_size: u32::MAX };
        let values: Vec<LinkValues> = raws.iter().map(|(raw, manual)| links(raw, *manual)).collect();
        let u = Unifier::from_members(
            keys.clone(),
            limits,
            values.iter().cloned().enumerate().map(|(i, v)| (i as MemberId + 1, v)),
        );
        let mut holders: HashMap<(usize, &str), u32> = HashMap::new();
        for v in &values {
            for (a, value) in v.0.iter().enumerate() {
                if let Some(value) = value {
                    *holders.entry((a, value.as_str())).or_default() += 1;
                }
            }
        }
        let linked = |x: &LinkValues, y: &LinkValues| {
            keys.attributes().map(Attribute::index).any(|a| match (&x.0[a], &y.0[a]) {
                (Some(p), Some(q)) => p == q && holders[&(a, p.as_str())] <= max_members_per_value,
                _ => false,
            })
        };
        // Naive components: repeatedly relabel to the smallest reachable index.
        let n = values.len();
        let mut label: Vec<usize> = (0..n).collect();
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..n {
                for j in 0..n {
                    if linked(&values[i], &values[j]) && label[j] < label[i] {
                        label[i] = label[j];
                        changed = true;
                    }
                }
            }
        }
        let expected: Vec<(MemberId, ProfileId)> =
            (0..n).map(|i| (i as MemberId + 1, label[i] as ProfileId + 1)).collect();
        prop_assert_eq!(profiles(&u), expected);
    }
}
