//! The path parameters of the API's routes, declared once for every handler, and the attribute
//! name they (and bodies) carry. Each id is read by [`json::id`] (an integer from 1 to 2^63-1,
//! else `INVALID_ARGUMENT`) and documented as [`json::ApiId`], so the OpenAPI document states
//! exactly what the server accepts. This module is a leaf of `http/`.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unify_actors::engine::{Attribute, Column};
use unify_actors::json::{self, ApiId};
use unify_storage::Id;
use utoipa::{IntoParams, ToSchema};

/// A unify-key attribute name; any other name is `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeName(pub Attribute);

/// Documented as the enum of the six names, so that generated clients send only those.
impl utoipa::PartialSchema for AttributeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_enum(
            Attribute::ALL.map(Attribute::as_str),
            Some("A unify-key attribute name; any other name is `INVALID_ARGUMENT`."),
        )
        .into()
    }
}

impl ToSchema for AttributeName {}

/// The schema of an attribute a member operation may set: the unify-key attributes but
/// `external_member_id`, which identifies the member (SPEC 2.6). Read as an [`AttributeName`];
/// `external_member_id` is refused with `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct EditableAttributeName;

impl utoipa::PartialSchema for EditableAttributeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_enum(
            Column::ALL
                .into_iter()
                .filter_map(|c| c.attribute().map(Attribute::as_str)),
            Some(
                "A unify-key attribute a member operation may set (`external_member_id` \
                 identifies the member and is `INVALID_ARGUMENT`).",
            ),
        )
        .into()
    }
}

impl ToSchema for EditableAttributeName {}

/// The schema of a string that takes one of `values` (the API's closed name lists).
pub fn string_enum(
    values: impl IntoIterator<Item = &'static str>,
    description: Option<&str>,
) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values))
        .description(description)
        .build()
}

impl<'de> Deserialize<'de> for AttributeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Attribute::from_str(&name)
            .map(AttributeName)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for AttributeName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// `/orgs/{org_id}/...`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrgPath {
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub org_id: Id,
}

/// `/orgs/{org_id}/chat/members/{member_id}/...`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub org_id: Id,
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub member_id: Id,
}

/// `/orgs/{org_id}/channels/{channel_id}/...`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub org_id: Id,
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub channel_id: Id,
}

/// `/orgs/{org_id}/imports/{job_id}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub org_id: Id,
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub job_id: Id,
}

/// `/orgs/{org_id}/organization/unify-keys/{unify_key_id}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub org_id: Id,
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub unify_key_id: Id,
}

/// `/orgs/{org_id}/organization/unify-scope-setting/unify-keys/{attribute}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AttributePath {
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    pub org_id: Id,
    pub attribute: AttributeName,
}
