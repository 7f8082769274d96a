//! Wall-clock helpers: records keep unix milliseconds, the API shows RFC 3339 UTC.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use unify_storage::Millis;

/// Returns the current time in unix milliseconds.
pub fn now_millis() -> Millis {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as Millis
}

/// Formats unix milliseconds as an RFC 3339 UTC timestamp (`2026-01-31T12:25:27.000Z`).
pub fn rfc3339(ms: Millis) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses an RFC 3339 timestamp into unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    Millis::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let ms = parse_rfc3339("2026-01-31T12:25:27Z").unwrap();
        assert_eq!(rfc3339(ms), "2026-01-31T12:25:27Z");
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
