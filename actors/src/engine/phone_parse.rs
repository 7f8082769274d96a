//! Parsing of phone numbers by phonenumber's own parser (`parse_with`), over copies of its
//! metadata database, so that threads parsing at once do not wait for each other.
//!
//! `phonenumber::parse` runs about half a dozen metadata patterns per number through the
//! regex cache of `DATABASE`: one mutex around an LRU of compiled regexes, held while the
//! pattern is hashed and matched, so that two import reader threads take turns. A `Database`
//! built with `Database::from` has a cache of its own. The copies are built from `DATABASE`
//! through its public getters (every field of the loader's metadata has one), a few of them,
//! and each thread keeps to the copy it was first given.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use phonenumber::metadata::{DATABASE, Database, Descriptor, Format, Metadata, loader};
use phonenumber::{PhoneNumber, country};

/// Copies of the database: enough that the threads normalizing at once (import readers,
/// runtime workers) rarely share one, few enough that their memory does not matter.
const COPIES: usize = 4;

static COPY: [OnceLock<Database>; COPIES] = [const { OnceLock::new() }; COPIES];

static NEXT_COPY: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The copy this thread parses with, given round-robin on first use.
    static THREAD_COPY: usize = NEXT_COPY.fetch_add(1, Ordering::Relaxed) % COPIES;
}

/// Returns `phonenumber::parse(Some(region), raw)`, or `None` for its errors.
pub fn parse(region: country::Id, raw: &str) -> Option<PhoneNumber> {
    let copy = THREAD_COPY.with(|i| *i);
    let database = COPY[copy].get_or_init(copy_of_database);
    phonenumber::parse_with(database, Some(region), raw).ok()
}

/// Builds a database with the content of `DATABASE`, in an order that gives the same lookups:
/// the entries of each country code in `DATABASE`'s order for it (its main country first,
/// which `Database::from` keeps first), and, of the entries sharing a region id (the
/// non-geographic `001`), the one `DATABASE.by_id` returns last, so that it is returned here
/// too.
pub(super) fn copy_of_database() -> Database {
    let mut entries: Vec<&Metadata> = (0..1000u16)
        .flat_map(|code| DATABASE.by_code(&code).unwrap_or_default())
        .collect();
    let is_by_id = |meta: &Metadata| {
        DATABASE
            .by_id(meta.id())
            .is_some_and(|found| std::ptr::eq(found, meta))
    };
    // A stable sort: the entries `by_id` does not return (the other `001` entries) first, so
    // that each id's own entry is inserted last; the order within a code is kept.
    entries.sort_by_key(|meta| is_by_id(meta));
    Database::from(entries.into_iter().map(loader_metadata).collect())
        .expect("phonenumber's own metadata loads")
}

/// The loader's form of an entry (what `Database::from` reads), from its getters.
pub(super) fn loader_metadata(meta: &Metadata) -> loader::Metadata {
    let d = meta.descriptors();
    loader::Metadata {
        general: Some(loader_descriptor(d.general())),
        fixed_line: d.fixed_line().map(loader_descriptor),
        mobile: d.mobile().map(loader_descriptor),
        toll_free: d.toll_free().map(loader_descriptor),
        premium_rate: d.premium_rate().map(loader_descriptor),
        shared_cost: d.shared_cost().map(loader_descriptor),
        personal_number: d.personal_number().map(loader_descriptor),
        voip: d.voip().map(loader_descriptor),
        pager: d.pager().map(loader_descriptor),
        uan: d.uan().map(loader_descriptor),
        emergency: d.emergency().map(loader_descriptor),
        voicemail: d.voicemail().map(loader_descriptor),
        short_code: d.short_code().map(loader_descriptor),
        standard_rate: d.standard_rate().map(loader_descriptor),
        carrier: d.carrier().map(loader_descriptor),
        no_international: d.no_international().map(loader_descriptor),
        id: Some(meta.id().to_owned()),
        country_code: Some(meta.country_code()),
        international_prefix: meta.international_prefix().map(|re| re.as_str().to_owned()),
        preferred_international_prefix: meta.preferred_international_prefix().map(Into::into),
        national_prefix: meta.national_prefix().map(Into::into),
        preferred_extension_prefix: meta.preferred_extension_prefix().map(Into::into),
        national_prefix_for_parsing: meta
            .national_prefix_for_parsing()
            .map(|re| re.as_str().to_owned()),
        national_prefix_transform_rule: meta.national_prefix_transform_rule().map(Into::into),
        formats: meta.formats().iter().map(loader_format).collect(),
        international_formats: meta
            .international_formats()
            .iter()
            .map(loader_format)
            .collect(),
        main_country_for_code: meta.is_main_country_for_code(),
        leading_digits: meta.leading_digits().map(|re| re.as_str().to_owned()),
        mobile_number_portable: meta.is_mobile_number_portable(),
        // Used only while reading the XML; `Database::from` ignores it.
        defaults: Default::default(),
    }
}

fn loader_descriptor(descriptor: &Descriptor) -> loader::Descriptor {
    loader::Descriptor {
        national_number: Some(descriptor.national_number().as_str().to_owned()),
        possible_length: descriptor.possible_length().to_vec(),
        possible_local_length: descriptor.possible_local_length().to_vec(),
        example: descriptor.example().map(Into::into),
    }
}

fn loader_format(format: &Format) -> loader::Format {
    loader::Format {
        pattern: Some(format.pattern().as_str().to_owned()),
        format: Some(format.format().to_owned()),
        leading_digits: format
            .leading_digits()
            .iter()
            .map(|re| re.as_str().to_owned())
            .collect(),
        national_prefix_formatting_rule: format.national_prefix().map(Into::into),
        national_prefix_optional_when_formatting: format.is_national_prefix_optional(),
        domestic_carrier: format.domestic_carrier().map(Into::into),
    }
}
