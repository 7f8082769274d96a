//! Value encoding: one format-version byte followed by the record in bincode 2 (serde,
//! standard configuration), or, for large blocks of alike records ([`encode_packed`]), by that
//! encoding compressed with LZ4.
//!
//! The version byte lets a future build recognise (and migrate or refuse) values written in an
//! older layout instead of silently misreading them, since bincode is not self-describing.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, StoreError};

/// Format version written as the first byte of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

/// Format version of a value whose bincode encoding follows LZ4-compressed, prefixed with its
/// length (see [`encode_packed`]).
pub const PACKED_VERSION: u8 = 2;

/// Upper bound on the memory a single decode may claim. It keeps a corrupted length prefix from
/// making the decoder allocate gigabytes; no record comes anywhere near it.
pub(crate) const MAX_DECODE_BYTES: usize = 256 << 20;

/// Returns the encoded bytes of `value`: [`FORMAT_VERSION`] followed by its bincode encoding.
///
/// # Panics
///
/// Panics if serde reports an error while serializing `value`. That cannot happen for the
/// records of this crate: they are plain data whose sequences have a known length, which is the
/// only thing bincode's serde encoder can refuse, and writing to a `Vec` does not fail.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .unwrap_or_else(|err| {
            panic!(
                "encoding {} cannot fail for plain records: {err}",
                std::any::type_name::<T>()
            )
        });
    out
}

/// Returns [`PACKED_VERSION`] followed by the LZ4-compressed bincode encoding of `value`.
///
/// For the large values of a bulk write whose records repeat their field names and much of
/// their text (an event block is JSON frames): they shrink severalfold, and the store's write
/// path, which copies and checksums every byte of a value several times, costs more than the
/// compression does.
///
/// # Panics
///
/// As [`encode`].
pub fn encode_packed<T: Serialize>(value: &T) -> Vec<u8> {
    pack(&encode(value))
}

/// Returns [`PACKED_VERSION`] followed by the LZ4-compressed body of `plain` (a value that
/// starts with [`FORMAT_VERSION`]).
pub(crate) fn pack(plain: &[u8]) -> Vec<u8> {
    let mut out = vec![PACKED_VERSION];
    out.extend_from_slice(&lz4_flex::compress_prepend_size(&plain[1..]));
    out
}

/// Returns the value decoded from `bytes` (plain or packed), refusing an unknown format
/// version, a truncated or corrupt value and trailing bytes with [`StoreError::Codec`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.first() == Some(&PACKED_VERSION) {
        let plain = unpack(&bytes[1..], std::any::type_name::<T>())?;
        return decode_body(&plain, std::any::type_name::<T>());
    }
    decode_borrowed(bytes)
}

/// [`decode`] for a plain value that may borrow its strings from `bytes`.
pub fn decode_borrowed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    let type_name = std::any::type_name::<T>();
    let Some((&version, body)) = bytes.split_first() else {
        return Err(StoreError::Codec(format!("empty value for {type_name}")));
    };
    if version != FORMAT_VERSION {
        return Err(StoreError::Codec(format!(
            "unknown format version {version} for {type_name} (expected {FORMAT_VERSION})"
        )));
    }
    decode_body(body, type_name)
}

/// Returns the bincode encoding a packed value holds, refusing a claimed size above the
/// decode limit before allocating it.
/// Returns the body (after the version byte) of a packed value, given what follows its
/// [`PACKED_VERSION`].
pub(crate) fn unpack(packed: &[u8], type_name: &str) -> Result<Vec<u8>> {
    let corrupt = |what: String| StoreError::Codec(format!("packed {type_name}: {what}"));
    let Some(size) = packed
        .first_chunk::<4>()
        .map(|b| u32::from_le_bytes(*b) as usize)
    else {
        return Err(corrupt("no length prefix".into()));
    };
    if size > MAX_DECODE_BYTES {
        return Err(corrupt(format!("claims {size} bytes")));
    }
    let mut plain = vec![0; size];
    let written = lz4_flex::decompress_into(&packed[4..], &mut plain)
        .map_err(|err| corrupt(err.to_string()))?;
    if written != size {
        return Err(corrupt(format!(
            "{written} bytes where {size} were claimed"
        )));
    }
    Ok(plain)
}

fn decode_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8], type_name: &str) -> Result<T> {
    let config = bincode::config::standard().with_limit::<MAX_DECODE_BYTES>();
    let (value, read) = bincode::serde::borrow_decode_from_slice(body, config)
        .map_err(|err| StoreError::Codec(format!("decoding {type_name}: {err}")))?;
    if read != body.len() {
        return Err(StoreError::Codec(format!(
            "{} trailing bytes after {type_name}",
            body.len() - read
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Member, Source};

    fn member() -> Member {
        Member {
            id: 42,
            org_id: 7,
            source: Source::Caac,
            channel_id: Some(3),
            external_member_id: "U123".into(),
            original_name: Some("Ann".into()),
            display_name: None,
            username: Some("ann".into()),
            display_email: Some("ann@example.com".into()),
            display_mobile: None,
            custom_id: None,
            line_id: Some("line-ann".into()),
            connect_id: None,
            manual_unification: true,
            profile_id: 40,
            last_message_at: Some(1_700_000_000_000),
            created_at: 1,
            updated_at: 2,
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&member());
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: Member = decode(&bytes).unwrap();
        assert_eq!(back, member());
    }

    #[test]
    fn packed_round_trip_is_smaller_for_alike_records() {
        let members = vec![member(); 100];
        let packed = encode_packed(&members);
        assert_eq!(packed[0], PACKED_VERSION);
        assert!(
            packed.len() * 4 < encode(&members).len(),
            "{} bytes",
            packed.len()
        );
        let back: Vec<Member> = decode(&packed).unwrap();
        assert_eq!(back, members);
    }

    #[test]
    fn corrupt_packed_values_are_refused() {
        let packed = encode_packed(&vec![member(); 10]);
        for len in 0..packed.len() {
            let err = decode::<Vec<Member>>(&packed[..len]).unwrap_err();
            assert!(matches!(err, StoreError::Codec(_)), "len {len}: {err:?}");
        }
        // A length prefix claiming more than the decode limit is refused before allocating.
        let mut huge = vec![PACKED_VERSION];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&packed[5..]);
        let err = decode::<Vec<Member>>(&huge).unwrap_err();
        assert!(matches!(err, StoreError::Codec(_)), "{err:?}");
        // A packed value is never read as a borrowed plain one.
        assert!(decode_borrowed::<Vec<Member>>(&packed).is_err());
    }

    #[test]
    fn unknown_version_byte_is_refused() {
        let mut bytes = encode(&member());
        bytes[0] = PACKED_VERSION + 1;
        let err = decode::<Member>(&bytes).unwrap_err();
        assert!(matches!(err, StoreError::Codec(_)), "{err:?}");
    }

    #[test]
    fn truncated_value_is_refused() {
        let bytes = encode(&member());
        for len in 0..bytes.len() {
            let err = decode::<Member>(&bytes[..len]).unwrap_err();
            assert!(matches!(err, StoreError::Codec(_)), "len {len}: {err:?}");
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&member());
        bytes.push(0);
        let err = decode::<Member>(&bytes).unwrap_err();
        assert!(matches!(err, StoreError::Codec(_)), "{err:?}");
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // A string whose varint length (marker 0xfd, then a little-endian u64) claims
        // u64::MAX bytes.
        let bytes = [
            FORMAT_VERSION,
            0xfd,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ];
        let err = decode::<String>(&bytes).unwrap_err();
        assert!(matches!(err, StoreError::Codec(_)), "{err:?}");
    }
}
