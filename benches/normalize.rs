//! The mobile linking value (`Normalizer::normalize(DisplayMobile, ..)`, SPEC 2.1) of the
//! numbers `unify gen` writes: each of its three spellings of a TW mobile, the mix it
//! generates (junk included), and that mix on two threads at once, as the two import reader
//! threads normalize a bulk import.
//!
//! `cargo bench --bench normalize`

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use unify::synth::{GenOptions, GenSource, generate};
use unify_actors::engine::{Attribute, Normalizer};

/// The mobiles of 20,000 `unify gen` members (about half of them carry one).
fn gen_mobiles() -> Vec<String> {
    let options = GenOptions {
        members: 20_000,
        seed: 42,
        source: GenSource::Maac,
        channels: Vec::new(),
        people: None,
    };
    generate(&options)
        .filter_map(|m| m.display_mobile)
        .collect()
}

fn spelled(i: u64) -> [String; 3] {
    let d = format!("{:08}", 10_000_000 + i * 7919 % 80_000_000);
    [
        format!("09{d}"),
        format!("+886 9{} {} {}", &d[..2], &d[2..5], &d[5..]),
        format!("09{}-{}-{}", &d[..2], &d[2..5], &d[5..]),
    ]
}

fn bench(c: &mut Criterion) {
    let normalizer = Normalizer::default();
    let mut group = c.benchmark_group("normalize_mobile");
    for (spelling, name) in ["0912345678", "+886 912 345 678", "0912-345-678"]
        .iter()
        .enumerate()
    {
        let inputs: Vec<String> = (0..1000).map(|i| spelled(i)[spelling].clone()).collect();
        let mut i = 0;
        group.bench_function(*name, |b| {
            b.iter(|| {
                i = (i + 1) % inputs.len();
                black_box(normalizer.normalize(Attribute::DisplayMobile, &inputs[i]))
            })
        });
    }

    let mobiles = gen_mobiles();
    let mut i = 0;
    group.bench_function("gen mix", |b| {
        b.iter(|| {
            i = (i + 1) % mobiles.len();
            black_box(normalizer.normalize(Attribute::DisplayMobile, &mobiles[i]))
        })
    });

    // Time per mobile when two threads each normalize `iters` of the mix at once.
    group.bench_function("gen mix, 2 threads", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            thread::scope(|s| {
                for offset in [0, mobiles.len() / 2] {
                    let (normalizer, mobiles) = (&normalizer, &mobiles);
                    s.spawn(move || {
                        for n in 0..iters as usize {
                            let raw = &mobiles[(offset + n) % mobiles.len()];
                            black_box(normalizer.normalize(Attribute::DisplayMobile, raw));
                        }
                    });
                }
            });
            started.elapsed() / 2
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
