//! P1 (SPEC 9): full rebuild of a 1M-member scope (3 keys, 1 distinct) against a bare
//! union-find over the same key links, in the same run.
//!
//! `cargo bench --bench rebuild` (set `UNIFY_BENCH_MEMBERS` to change the scope size).

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use unify::synth::{GenOptions, GenSource, generate};
use unify_actors::engine::{
    ATTRIBUTE_COUNT, Attribute, KeySet, Limits, LinkValues, Normalizer, Unifier, UnifyKey,
};

fn members() -> u64 {
    std::env::var("UNIFY_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Builds the scope from `unify gen` data: 70% caac members on three channels, 30% maac
/// members, drawn from one pool of people so that they overlap across sources.
fn scope(keys: &KeySet) -> Unifier {
    let started = Instant::now();
    let total = members();
    let people = Some(total * 6 / 10);
    let caac = GenOptions {
        members: total * 7 / 10,
        seed: 42,
        source: GenSource::Caac,
        channels: vec![1, 2, 3],
        people,
    };
    let maac = GenOptions {
        members: total - caac.members,
        source: GenSource::Maac,
        ..caac.clone()
    };
    let normalizer = Normalizer::default();
    let links = generate(&caac).chain(generate(&maac)).map(|m| {
        let mut raw: [Option<&str>; ATTRIBUTE_COUNT] = [None; ATTRIBUTE_COUNT];
        raw[Attribute::DisplayEmail.index()] = m.display_email.as_deref();
        raw[Attribute::DisplayMobile.index()] = m.display_mobile.as_deref();
        raw[Attribute::CustomId.index()] = m.custom_id.as_deref();
        raw[Attribute::ExternalMemberId.index()] = Some(&m.external_member_id);
        LinkValues::normalize(&normalizer, &raw, false)
    });
    let unifier = Unifier::from_members(
        keys.clone(),
        Limits::default(),
        (1..).zip(links).collect::<Vec<_>>(),
    );
    eprintln!(
        "scope: {} members, {} profiles, {} hot values, built in {:.1?}",
        unifier.len(),
        unifier.profile_count(),
        unifier.hot_values().len(),
        started.elapsed()
    );
    unifier
}

fn rebuild(c: &mut Criterion) {
    let keys = KeySet::new(vec![
        UnifyKey {
            attribute: Attribute::DisplayEmail,
            is_distinct: false,
        },
        UnifyKey {
            attribute: Attribute::DisplayMobile,
            is_distinct: false,
        },
        UnifyKey {
            attribute: Attribute::CustomId,
            is_distinct: true,
        },
    ])
    .expect("valid keys");
    let unifier = scope(&keys);
    let mut group = c.benchmark_group("p1_rebuild");
    group.sample_size(10);
    group.bench_function("rebuild", |b| {
        b.iter(|| black_box(unifier.rebuild_profiles(black_box(&keys))))
    });
    group.bench_function("bare_union_find", |b| {
        b.iter(|| black_box(unifier.baseline_components(black_box(&keys))))
    });
    group.finish();
}

criterion_group!(benches, rebuild);
criterion_main!(benches);
