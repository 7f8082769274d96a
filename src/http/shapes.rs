//! Request and response shapes that more than one resource of the API uses: sources, orgs,
//! members, unify-key lists, the admin setting, and the one call that applies a member
//! operation and answers with the member. Handlers' own shapes stay in their files. This
//! module calls only the runtime.

use serde::{Deserialize, Serialize};
use unify_actors::clock::rfc3339;
use unify_actors::engine::{Attribute, UnifyKey};
use unify_actors::ops::MemberOp;
use unify_storage::{Id, Member, Org, ScopeRecord, Source};
use utoipa::ToSchema;

use super::params::AttributeName;
use super::state::AppState;
use crate::error::{ApiError, ApiResult};

/// `caac` (chat) or `maac` (marketing).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceName {
    Caac,
    Maac,
}

impl From<SourceName> for Source {
    fn from(s: SourceName) -> Self {
        match s {
            SourceName::Caac => Source::Caac,
            SourceName::Maac => Source::Maac,
        }
    }
}

impl From<Source> for SourceName {
    fn from(s: Source) -> Self {
        match s {
            Source::Caac => SourceName::Caac,
            Source::Maac => SourceName::Maac,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgView {
    pub id: Id,
    pub source: SourceName,
    pub name: String,
    pub uuid: String,
}

impl From<Org> for OrgView {
    fn from(o: Org) -> Self {
        OrgView {
            id: o.id,
            source: o.source.into(),
            name: o.name,
            uuid: o.uuid,
        }
    }
}

/// A member as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub id: Id,
    pub org_id: Id,
    pub source: SourceName,
    pub channel_id: Option<Id>,
    pub external_member_id: String,
    pub original_name: Option<String>,
    pub display_name: Option<String>,
    pub username: Option<String>,
    pub display_email: Option<String>,
    pub display_mobile: Option<String>,
    pub custom_id: Option<String>,
    pub line_id: Option<String>,
    pub connect_id: Option<String>,
    pub manual_unification: bool,
    pub profile_id: Id,
    pub last_message_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        MemberView {
            id: m.id,
            org_id: m.org_id,
            source: m.source.into(),
            channel_id: m.channel_id,
            external_member_id: m.external_member_id,
            original_name: m.original_name,
            display_name: m.display_name,
            username: m.username,
            display_email: m.display_email,
            display_mobile: m.display_mobile,
            custom_id: m.custom_id,
            line_id: m.line_id,
            connect_id: m.connect_id,
            manual_unification: m.manual_unification,
            profile_id: m.profile_id,
            last_message_at: m.last_message_at.map(rfc3339),
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
        }
    }
}

/// Applies `op` to a member of the (already authorized) org and returns the member as it is
/// after; a member that does not exist is 404.
pub async fn apply_member_op(
    state: &AppState,
    org_id: Id,
    member_id: Id,
    op: MemberOp,
) -> ApiResult<axum::Json<MemberView>> {
    let member = state
        .runtime
        .member_op(org_id, member_id, op)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    Ok(axum::Json(member.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminKey {
    pub id: Id,
    pub attribute: String,
    pub is_distinct: bool,
}

/// The admin shape of a unify-scope setting.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSetting {
    pub unify_scope_id: Id,
    pub orgs: Vec<OrgView>,
    pub unify_keys: Vec<AdminKey>,
    pub is_cdh_connected: bool,
    /// The attribute of the distinct key, if any.
    pub distinct_key: Option<String>,
}

/// Returns the admin view of a scope record.
pub fn admin_setting(state: &AppState, record: ScopeRecord) -> ApiResult<AdminSetting> {
    let orgs = record
        .org_ids
        .iter()
        .map(|&id| Ok(state.runtime.org(id)?.into()))
        .collect::<ApiResult<_>>()?;
    let distinct_key = record
        .keys
        .iter()
        .find(|k| k.is_distinct)
        .map(|k| k.attribute.clone());
    Ok(AdminSetting {
        unify_scope_id: record.id,
        is_cdh_connected: record.org_ids.len() > 1,
        orgs,
        unify_keys: record
            .keys
            .into_iter()
            .map(|k| AdminKey {
                id: k.id,
                attribute: k.attribute,
                is_distinct: k.is_distinct,
            })
            .collect(),
        distinct_key,
    })
}

/// Returns the attributes of a list of names.
pub fn attributes(names: &[AttributeName]) -> Vec<Attribute> {
    names.iter().map(|a| a.0).collect()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    pub attribute: AttributeName,
    #[serde(default)]
    pub is_distinct: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysInput {
    /// In priority order; each attribute at most once, at most one distinct.
    #[schema(max_items = 6)]
    pub unify_keys: Vec<KeyInput>,
}

impl KeysInput {
    pub fn keys(&self) -> Vec<UnifyKey> {
        self.unify_keys
            .iter()
            .map(|k| UnifyKey {
                attribute: k.attribute.0,
                is_distinct: k.is_distinct,
            })
            .collect()
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyNames {
    #[schema(schema_with = key_names_schema)]
    pub unify_keys: Vec<AttributeName>,
}

/// Documents a key-name list as what the server accepts: distinct names, at most six.
fn key_names_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("AttributeName"))
        .unique_items(true)
        .max_items(Some(Attribute::ALL.len()))
        .description(Some(
            "Attribute names in priority order, each at most once.",
        ))
        .build()
}
