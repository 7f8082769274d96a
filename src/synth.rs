//! Deterministic synthetic members (`unify gen`) with realistic overlap, for benches and demos.
//!
//! Members are drawn from a pool of *people*. The pool depends only on the seed and its size,
//! so a caac stream and a maac stream generated with the same seed and `people` share emails,
//! mobiles and custom ids, as the same customers do across the two products.

use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Which product the generated members belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenSource {
    Caac,
    Maac,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub members: u64,
    pub seed: u64,
    pub source: GenSource,
    /// Channel ids that caac members are spread over (ignored for maac).
    pub channels: Vec<u64>,
    /// Size of the pool of people; defaults to 60% of `members`.
    pub people: Option<u64>,
}

/// One synthetic member: exactly a `POST /chat/members` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenMember {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<u64>,
    pub external_member_id: String,
    pub original_name: String,
    pub display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_mobile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
}

const DOMAINS: &[&str] = &["gmail.com", "yahoo.com.tw", "hotmail.com", "example.com.tw"];
const JUNK_EMAILS: &[&str] = &["test@test.com", "null", "none", "n/a", "no-email"];
const JUNK_MOBILES: &[&str] = &["0000000000", "123", "n/a"];

/// Returns the generated members, in order. The same options always give the same members.
pub fn generate(options: &GenOptions) -> impl Iterator<Item = GenMember> + '_ {
    let people = options.people.unwrap_or(options.members * 6 / 10).max(1);
    let stream = match options.source {
        GenSource::Caac => 0xCAAC,
        GenSource::Maac => 0x3AAC,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ (stream << 48));
    (0..options.members).map(move |i| member(options, people, i, &mut rng))
}

fn member(options: &GenOptions, people: u64, i: u64, rng: &mut ChaCha8Rng) -> GenMember {
    // Skewed: a few people are met many times, most once or twice.
    let u: f64 = rng.random();
    let person = ((u.powf(1.6)) * people as f64) as u64 % people;
    let channel_id = match options.source {
        GenSource::Caac if !options.channels.is_empty() => {
            Some(options.channels[rng.random_range(0..options.channels.len())])
        }
        _ => None,
    };
    let email = if rng.random_bool(0.02) {
        Some(JUNK_EMAILS[rng.random_range(0..JUNK_EMAILS.len())].to_owned())
    } else if rng.random_bool(0.55) {
        let base = format!(
            "user{person}@{}",
            DOMAINS[(person % DOMAINS.len() as u64) as usize]
        );
        Some(match rng.random_range(0..4) {
            0 => base.to_uppercase(),
            1 => format!(" {base} "),
            _ => base,
        })
    } else {
        None
    };
    let mobile = if rng.random_bool(0.02) {
        Some(JUNK_MOBILES[rng.random_range(0..JUNK_MOBILES.len())].to_owned())
    } else if rng.random_bool(0.5) {
        let digits = format!("{:08}", 10_000_000 + person % 80_000_000);
        Some(match rng.random_range(0..3) {
            0 => format!("09{digits}"),
            1 => format!("+886 9{} {} {}", &digits[..2], &digits[2..5], &digits[5..]),
            _ => format!("09{}-{}-{}", &digits[..2], &digits[2..5], &digits[5..]),
        })
    } else {
        None
    };
    // A fifth of people carry a distinct custom id; 1% of members carry someone else's.
    let custom_id = if person.is_multiple_of(5) && rng.random_bool(0.7) {
        Some(format!("CID{person:08}"))
    } else if rng.random_bool(0.01) {
        Some(format!("CID{:08}", rng.random_range(0..people) / 5 * 5))
    } else {
        None
    };
    let name = format!("Person {person}");
    GenMember {
        channel_id,
        external_member_id: format!("U{:016x}", hash(options.seed, i, channel_id.unwrap_or(0))),
        original_name: name.clone(),
        display_name: name,
        display_email: email,
        display_mobile: mobile,
        custom_id,
    }
}

/// A stable, well-mixed 64-bit id (splitmix64), unique per (seed, index, channel).
fn hash(seed: u64, i: u64, channel: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i)
        .wrapping_add(channel << 40);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes the members as NDJSON.
pub fn write_ndjson(options: &GenOptions, out: impl Write) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    for m in generate(options) {
        serde_json::to_writer(&mut out, &m)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(source: GenSource, seed: u64) -> GenOptions {
        GenOptions {
            members: 2000,
            seed,
            source,
            channels: vec![1, 2, 3],
            people: Some(1000),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_members_and_another_seed_does_not() {
        let a: Vec<_> = generate(&options(GenSource::Caac, 7)).collect();
        let b: Vec<_> = generate(&options(GenSource::Caac, 7)).collect();
        let c: Vec<_> = generate(&options(GenSource::Caac, 8)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn streams_overlap_across_channels_and_sources_and_carry_junk() {
        let caac: Vec<_> = generate(&options(GenSource::Caac, 7)).collect();
        let maac: Vec<_> = generate(&options(GenSource::Maac, 7)).collect();
        assert!(maac.iter().all(|m| m.channel_id.is_none()));
        let emails = |ms: &[GenMember]| -> std::collections::HashSet<String> {
            ms.iter()
                .filter_map(|m| m.display_email.as_deref())
                .map(|e| e.trim().to_lowercase())
                .collect()
        };
        let shared = emails(&caac).intersection(&emails(&maac)).count();
        assert!(shared > 100, "only {shared} emails shared across sources");
        let by_channel = |c| caac.iter().filter(|m| m.channel_id == Some(c)).count();
        assert!((1..=3).all(|c| by_channel(c) > 400));
        assert!(
            caac.iter()
                .any(|m| m.display_email.as_deref() == Some("test@test.com"))
        );
        assert!(caac.iter().any(|m| m.custom_id.is_some()));
        let ids: std::collections::HashSet<_> =
            caac.iter().map(|m| &m.external_member_id).collect();
        assert_eq!(ids.len(), caac.len(), "external ids are unique");
    }

    #[test]
    fn ndjson_has_one_member_per_line() {
        let mut out = Vec::new();
        write_ndjson(&options(GenSource::Maac, 1), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2000);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["external_member_id"].is_string());
        }
    }
}
