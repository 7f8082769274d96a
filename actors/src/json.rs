//! How every JSON input of the API is read: request bodies, import lines and webhook events
//! all go through [`parse`], and ids in them through [`id`] / [`optional_id`].
//!
//! serde's derived `Deserialize` for a struct also accepts a JSON array and fills the fields by
//! position, so `["pwned"]` would be read as `{"display_name": "pwned"}`. [`parse`] reads
//! through [`Strict`], a deserializer that wraps serde_json's and refuses a sequence wherever
//! a struct is expected, at any depth (a body, a nested object, an element of a list). Arrays
//! stay arrays where the type is a list or a tuple. This module is a leaf: it imports nothing
//! of the crate.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

/// The largest id the API accepts: ids are documented as `int64`, from 1.
pub const MAX_ID: u64 = i64::MAX as u64;

/// Why a JSON input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all: a syntax error, invalid UTF-8, trailing characters (`MALFORMED_JSON`).
    #[error("{0}")]
    Syntax(String),
    /// JSON of the wrong shape: a wrong type, a missing or unknown field, an array where an
    /// object belongs, an id out of range (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Data(String),
}

impl From<serde_json::Error> for JsonError {
    fn from(err: serde_json::Error) -> Self {
        match err.classify() {
            serde_json::error::Category::Data => JsonError::Data(err.to_string()),
            _ => JsonError::Syntax(err.to_string()),
        }
    }
}

/// Parses one JSON document into `T`, refusing an array wherever `T` has a struct.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Strict(&mut de))?;
    de.end()?;
    Ok(value)
}

/// Deserializes an id: an integer from 1 to 2^63-1 (`#[serde(deserialize_with = "id")]`).
pub fn id<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = <u64 as serde::Deserialize>::deserialize(d)?;
    if (1..=MAX_ID).contains(&value) {
        Ok(value)
    } else {
        Err(de::Error::invalid_value(
            Unexpected::Unsigned(value),
            &IdRange,
        ))
    }
}

/// Deserializes an optional id (`#[serde(default, deserialize_with = "optional_id")]`).
pub fn optional_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Wrapped(u64);
    impl<'de> serde::Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            id(d).map(Wrapped)
        }
    }
    Ok(<Option<Wrapped> as serde::Deserialize>::deserialize(d)?.map(|w| w.0))
}

/// The OpenAPI schema of every id the API reads (with [`id`] or [`optional_id`]): an
/// `int64` from 1. Used as `value_type = ApiId` in documented fields and parameters.
#[derive(Debug)]
pub struct ApiId;

impl utoipa::PartialSchema for ApiId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(i64::MAX))
            .description(Some("An id: an integer from 1 to 2^63-1."))
            .into()
    }
}

impl utoipa::ToSchema for ApiId {}

/// What [`id`] expects, for its error message.
struct IdRange;

impl de::Expected for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an id from 1 to {MAX_ID}")
    }
}

// ---------------------------------------------------------------------------------------------
// The strict deserializer. Every method forwards to the wrapped deserializer; what the wrapped
// one hands back (visitors, map and sequence accesses, seeds) is wrapped again, so that nested
// values are read strictly too. Only `deserialize_struct` and struct variants differ: their
// visitor refuses `visit_seq`.

/// A deserializer that refuses a sequence where a struct is expected.
#[derive(Debug)]
pub struct Strict<D>(pub D);

/// A visitor whose nested deserializers are [`Strict`]; with `struct_like`, sequences are
/// refused.
struct Wrap<V> {
    inner: V,
    struct_like: bool,
}

impl<V> Wrap<V> {
    fn any(inner: V) -> Self {
        Wrap {
            inner,
            struct_like: false,
        }
    }

    fn structure(inner: V) -> Self {
        Wrap {
            inner,
            struct_like: true,
        }
    }
}

struct WrapSeed<S>(S);
struct WrapSeq<A>(A);
struct WrapMap<A>(A);
struct WrapEnum<A>(A);
struct WrapVariant<A>(A);

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method(Wrap::any(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, Wrap::any(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(name, Wrap::any(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, Wrap::any(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .deserialize_tuple_struct(name, len, Wrap::any(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .deserialize_struct(name, fields, Wrap::structure(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, Wrap::any(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if self.struct_like {
            // Read through the array first, so that a broken one stays a syntax error.
            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
            return Err(de::Error::invalid_type(Unexpected::Seq, &"a JSON object"));
        }
        self.inner.visit_seq(WrapSeq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(WrapMap(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(WrapEnum(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for WrapSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for WrapSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next_element_seed(WrapSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WrapMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.0.next_key_seed(WrapSeed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.0.next_value_seed(WrapSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for WrapEnum<A> {
    type Error = A::Error;
    type Variant = WrapVariant<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Self::Error> {
        let (value, variant) = self.0.variant_seed(WrapSeed(seed))?;
        Ok((value, WrapVariant(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for WrapVariant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.0.newtype_variant_seed(WrapSeed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.tuple_variant(len, Wrap::any(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.struct_variant(fields, Wrap::structure(visitor))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        url: String,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        pair: Option<(u8, u8)>,
        #[serde(default, deserialize_with = "optional_id")]
        id: Option<u64>,
    }

    fn data(json: &str) -> bool {
        matches!(parse::<Outer>(json.as_bytes()), Err(JsonError::Data(_)))
    }

    #[test]
    fn objects_parse_and_lists_and_tuples_stay_arrays() {
        let outer: Outer = parse(
            br#"{"name": "a", "inner": {"url": "u"}, "list": [{"url": "v"}], "pair": [1, 2], "id": 9223372036854775807}"#,
        )
        .unwrap();
        assert_eq!(outer.inner, Some(Inner { url: "u".into() }));
        assert_eq!(outer.list, vec![Inner { url: "v".into() }]);
        assert_eq!(outer.pair, Some((1, 2)));
        assert_eq!(outer.id, Some(i64::MAX as u64));
        // serde_json alone reads an array as the struct, by position.
        assert!(serde_json::from_str::<Outer>(r#"["pwned"]"#).is_ok());
    }

    #[test]
    fn an_array_is_refused_wherever_an_object_belongs() {
        assert!(data(r#"["pwned"]"#));
        assert!(data(r#"[]"#));
        assert!(data(r#"{"name": "a", "inner": ["u"]}"#));
        assert!(data(r#"{"name": "a", "list": [["v"]]}"#));
        assert!(data(r#""text""#));
        assert!(data("42"));
        assert!(data("null"));
    }

    #[test]
    fn ids_are_between_1_and_2_pow_63_minus_1() {
        assert!(data(r#"{"name": "a", "id": 0}"#));
        assert!(data(r#"{"name": "a", "id": 9223372036854775808}"#));
        assert!(data(r#"{"name": "a", "id": -1}"#));
        assert!(parse::<Outer>(br#"{"name": "a", "id": null}"#).is_ok());
    }

    #[test]
    fn syntax_errors_are_told_apart() {
        for bad in [
            &b"{"[..],
            br#"{"name": "a"} {}"#,
            b"\xff",
            b"",
            b"[",
            b"[1,",
            br#"["a" "b"]"#,
        ] {
            assert!(
                matches!(parse::<Outer>(bad), Err(JsonError::Syntax(_))),
                "{bad:?}"
            );
        }
    }
}
