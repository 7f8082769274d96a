//! Unification endpoints (SPEC 4.5): the org's unify-scope setting, dry runs, merge state, hot
//! values, and the unification of one member (profile, explain, uni, change, cancel).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use unify_actors::engine::KeySet;
use unify_actors::json::{self, ApiId};
use unify_actors::key_change::KeyChange;
use unify_actors::ops::MemberOp;
use unify_storage::{Id, ScopeRecord};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::{Json, Path, Query};
use super::params::{
    AttributeName, AttributePath, EditableAttributeName, KeyPath, MemberPath, OrgPath,
};
use super::shapes::{
    AdminSetting, KeyNames, KeysInput, MemberView, SourceName, admin_setting, apply_member_op,
    attributes,
};
use super::state::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_setting, create_setting))
        .routes(routes!(replace_keys))
        .routes(routes!(remove_key))
        .routes(routes!(dry_run))
        .routes(routes!(scope_merge_state))
        .routes(routes!(hot_values))
        .routes(routes!(update_key))
        .routes(routes!(unification))
        .routes(routes!(unify_profile))
        .routes(routes!(profile_graph))
        .routes(routes!(explain))
        .routes(routes!(uni))
        .routes(routes!(change_unification))
        .routes(routes!(cancel_unification))
        .routes(routes!(member_merge_state))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingOrg {
    pub id: Id,
    pub source: SourceName,
}

/// The org-scoped unify-scope setting.
#[derive(Debug, Serialize, ToSchema)]
pub struct Setting {
    pub unify_scope_id: Id,
    pub is_cdh_connected: bool,
    pub orgs: Vec<SettingOrg>,
    /// Attribute names in priority order (`[]` when none).
    pub unify_keys: Vec<String>,
}

fn setting(state: &AppState, record: ScopeRecord) -> ApiResult<Setting> {
    let orgs = record
        .org_ids
        .iter()
        .map(|&id| {
            let org = state.runtime.org(id)?;
            Ok(SettingOrg {
                id,
                source: org.source.into(),
            })
        })
        .collect::<ApiResult<_>>()?;
    Ok(Setting {
        unify_scope_id: record.id,
        is_cdh_connected: record.org_ids.len() > 1,
        orgs,
        unify_keys: record.keys.into_iter().map(|k| k.attribute).collect(),
    })
}

/// Returns the org's unify-scope setting.
#[utoipa::path(get, path = "/organization/unify-scope-setting", tag = "unification",
    params(OrgPath),
    responses((status = 200, body = Setting), (status = "4XX", body = ErrorBody)))]
async fn get_setting(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
) -> ApiResult<axum::Json<Setting>> {
    let org = caller.org(&state, p.org_id)?;
    let record = state.runtime.setting(org.id).await?;
    Ok(axum::Json(setting(&state, record)?))
}

/// Creates the setting (the first keys) and re-unifies the scope.
#[utoipa::path(post, path = "/organization/unify-scope-setting", tag = "unification",
    params(OrgPath), request_body = KeysInput,
    responses((status = 201, body = Setting), (status = "4XX", body = ErrorBody)))]
async fn create_setting(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
    Json(body): Json<KeysInput>,
) -> ApiResult<(StatusCode, axum::Json<Setting>)> {
    let org = caller.org(&state, p.org_id)?;
    let record = state
        .runtime
        .change_keys(org.id, KeyChange::Create(body.keys()))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(setting(&state, record)?)))
}

/// Replaces the key list (kept keys keep `is_distinct`; new keys are not distinct).
#[utoipa::path(put, path = "/organization/unify-scope-setting/unify-keys", tag = "unification",
    params(OrgPath), request_body = KeyNames,
    responses((status = 200, body = Setting), (status = "4XX", body = ErrorBody)))]
async fn replace_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
    Json(body): Json<KeyNames>,
) -> ApiResult<axum::Json<Setting>> {
    let org = caller.org(&state, p.org_id)?;
    let change = KeyChange::Replace {
        attributes: attributes(&body.unify_keys),
        allow_connected: false,
    };
    let record = state.runtime.change_keys(org.id, change).await?;
    Ok(axum::Json(setting(&state, record)?))
}

/// Removes one key.
#[utoipa::path(delete, path = "/organization/unify-scope-setting/unify-keys/{attribute}",
    tag = "unification", params(AttributePath),
    responses((status = 200, body = Setting), (status = "4XX", body = ErrorBody)))]
async fn remove_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<AttributePath>,
) -> ApiResult<axum::Json<Setting>> {
    let org = caller.org(&state, p.org_id)?;
    let record = state
        .runtime
        .change_keys(org.id, KeyChange::Remove(p.attribute.0))
        .await?;
    Ok(axum::Json(setting(&state, record)?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunView {
    pub profiles_before: u64,
    pub profiles_after: u64,
    pub members_moved: u64,
    pub profiles_merged: u64,
    pub profiles_split: u64,
}

/// Computes what a key setting would do, changing nothing.
#[utoipa::path(post, path = "/organization/unify-scope-setting/dry-run", tag = "unification",
    params(OrgPath), request_body = KeysInput,
    responses((status = 200, body = DryRunView), (status = "4XX", body = ErrorBody)))]
async fn dry_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
    Json(body): Json<KeysInput>,
) -> ApiResult<axum::Json<DryRunView>> {
    let org = caller.org(&state, p.org_id)?;
    let keys = KeySet::new(body.keys()).map_err(|e| ApiError::invalid(e.to_string()))?;
    let d = state.runtime.dry_run(org.id, keys).await?;
    Ok(axum::Json(DryRunView {
        profiles_before: d.profiles_before,
        profiles_after: d.profiles_after,
        members_moved: d.members_moved,
        profiles_merged: d.profiles_merged,
        profiles_split: d.profiles_split,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgMergeState {
    pub org_id: Id,
    pub is_finished: bool,
}

/// Whether the scope's unification work is finished.
#[utoipa::path(get, path = "/organization/unify-scope-setting/merge-state", tag = "unification",
    params(OrgPath),
    responses((status = 200, body = OrgMergeState), (status = "4XX", body = ErrorBody)))]
async fn scope_merge_state(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
) -> ApiResult<axum::Json<OrgMergeState>> {
    let org = caller.org(&state, p.org_id)?;
    let is_finished = state.runtime.scope_merge_state(org.id)?;
    Ok(axum::Json(OrgMergeState {
        org_id: org.id,
        is_finished,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HotValueView {
    pub attribute: AttributeName,
    pub value: String,
    pub members: u32,
}

/// Key values held by more members than `unify.max_members_per_value`; they do not link.
#[utoipa::path(get, path = "/organization/unify-scope-setting/hot-values", tag = "unification",
    params(OrgPath),
    responses((status = 200, body = [HotValueView]), (status = "4XX", body = ErrorBody)))]
async fn hot_values(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
) -> ApiResult<axum::Json<Vec<HotValueView>>> {
    let org = caller.org(&state, p.org_id)?;
    let values = state.runtime.hot_values(org.id).await?;
    Ok(axum::Json(
        values
            .into_iter()
            .map(|h| HotValueView {
                attribute: AttributeName(h.attribute),
                value: h.value,
                members: h.members,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    pub unify_key_attribute: AttributeName,
    #[serde(default)]
    pub is_distinct: bool,
}

/// Changes one key's attribute and distinctness (admin).
#[utoipa::path(put, path = "/organization/unify-keys/{unify_key_id}", tag = "unification",
    params(KeyPath), request_body = KeyUpdate,
    responses((status = 200, body = AdminSetting), (status = "4XX", body = ErrorBody)))]
async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<KeyPath>,
    Json(body): Json<KeyUpdate>,
) -> ApiResult<axum::Json<AdminSetting>> {
    caller.admin_account()?;
    let org = caller.org(&state, p.org_id)?;
    let change = KeyChange::Update {
        key_id: p.unify_key_id,
        attribute: body.unify_key_attribute.0,
        is_distinct: body.is_distinct,
    };
    let record = state.runtime.change_keys(org.id, change).await?;
    Ok(axum::Json(admin_setting(&state, record)?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnifyMember {
    pub source: SourceName,
    pub channel_id: Option<Id>,
    pub channel_name: Option<String>,
    #[serde(rename = "type")]
    pub channel_type: Option<String>,
    pub member_id: Id,
    pub original_name: Option<String>,
    pub external_member_id: String,
    pub last_message_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Unification {
    pub member_id: Id,
    /// The other members of the member's profile, by member id.
    pub unify_members: Vec<UnifyMember>,
}

/// The other members of the member's profile.
#[utoipa::path(get, path = "/chat/members/{member_id}/unification", tag = "unification",
    params(MemberPath),
    responses((status = 200, body = Unification), (status = "4XX", body = ErrorBody)))]
async fn unification(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
) -> ApiResult<axum::Json<Unification>> {
    let org = caller.org(&state, p.org_id)?;
    let members = state.runtime.unification(org.id, p.member_id).await?;
    let unify_members = members
        .into_iter()
        .map(|(m, channel)| UnifyMember {
            source: m.source.into(),
            channel_id: m.channel_id,
            channel_name: channel.as_ref().map(|c| c.name.clone()),
            channel_type: channel.map(|c| c.channel_type),
            member_id: m.id,
            original_name: m.original_name,
            external_member_id: m.external_member_id,
            last_message_at: m.last_message_at.map(unify_actors::clock::rfc3339),
        })
        .collect();
    Ok(axum::Json(Unification {
        member_id: p.member_id,
        unify_members,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnifyProfile {
    pub profile_id: Id,
    pub unify_scope_id: Id,
    pub member_ids: Vec<Id>,
    pub display_name: Option<String>,
    pub display_email: Option<String>,
    pub display_mobile: Option<String>,
    pub custom_id: Option<String>,
    pub line_id: Option<String>,
    pub connect_id: Option<String>,
    pub updated_at: String,
}

/// The merged view of the member's unified profile.
#[utoipa::path(get, path = "/chat/members/{member_id}/unify-profile", tag = "unification",
    params(MemberPath),
    responses((status = 200, body = UnifyProfile), (status = "4XX", body = ErrorBody)))]
async fn unify_profile(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
) -> ApiResult<axum::Json<UnifyProfile>> {
    let org = caller.org(&state, p.org_id)?;
    let profile = state.runtime.profile(org.id, p.member_id).await?;
    let [
        display_name,
        display_email,
        display_mobile,
        custom_id,
        line_id,
        connect_id,
    ] = profile.view.fields;
    Ok(axum::Json(UnifyProfile {
        profile_id: profile.profile_id,
        unify_scope_id: profile.unify_scope_id,
        member_ids: profile.member_ids,
        display_name,
        display_email,
        display_mobile,
        custom_id,
        line_id,
        connect_id,
        updated_at: unify_actors::clock::rfc3339(profile.view.updated_at),
    }))
}

/// Members a graph shows when `limit` is not given.
const GRAPH_DEFAULT_MEMBERS: usize = 200;
/// Largest `limit` of a graph.
const GRAPH_MAX_MEMBERS: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct GraphQuery {
    /// Most members shown (nearest to the member first), 200 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A node of the graph: a member (`member_id`, `profile_id`, names) or a key node
/// (`attribute`, normalized `value`).
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphNodeView {
    /// `member:<member_id>` or `key:<attribute>:<normalized value>` (the step of an explain
    /// path names the same node).
    pub id: String,
    /// `member` or `key`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_member_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute: Option<AttributeName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A followed link: the member holds the key node and joined the profile owning it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
}

/// A refused link: the member holds the key node, but joining its owner's profile was refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphRefused {
    pub from: String,
    pub to: String,
    /// `distinct_conflict` or `max_profile_size`.
    pub reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GraphView {
    pub profile_id: Id,
    pub nodes: Vec<GraphNodeView>,
    pub edges: Vec<GraphEdge>,
    pub refused: Vec<GraphRefused>,
    /// The cluster has more members than `limit`; the nearest ones are shown.
    pub truncated: bool,
}

fn key_node_id(attribute: unify_actors::engine::Attribute, value: &str) -> String {
    format!("key:{attribute}:{value}")
}

/// The members of the member's cluster, their key nodes, links and refused links, for drawing.
#[utoipa::path(get, path = "/chat/members/{member_id}/unify-profile/graph", tag = "unification",
    params(MemberPath, GraphQuery),
    responses((status = 200, body = GraphView), (status = "4XX", body = ErrorBody)))]
async fn profile_graph(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
    Query(q): Query<GraphQuery>,
) -> ApiResult<axum::Json<GraphView>> {
    let org = caller.org(&state, p.org_id)?;
    let limit = q.limit.unwrap_or(GRAPH_DEFAULT_MEMBERS);
    if limit == 0 || limit > GRAPH_MAX_MEMBERS {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {GRAPH_MAX_MEMBERS}"
        )));
    }
    let g = state.runtime.graph(org.id, p.member_id, limit).await?;
    let members = g.members.into_iter().map(|m| GraphNodeView {
        id: format!("member:{}", m.id),
        kind: "member",
        member_id: Some(m.id),
        profile_id: Some(m.profile_id),
        org_id: Some(m.org_id),
        external_member_id: Some(m.external_member_id),
        display_name: m.display_name,
        original_name: m.original_name,
        attribute: None,
        value: None,
    });
    let keys = g.graph.keys.iter().map(|k| GraphNodeView {
        id: key_node_id(k.attribute, &k.value),
        kind: "key",
        member_id: None,
        profile_id: None,
        org_id: None,
        external_member_id: None,
        display_name: None,
        original_name: None,
        attribute: Some(AttributeName(k.attribute)),
        value: Some(k.value.clone()),
    });
    let mut edges = Vec::new();
    let mut refused = Vec::new();
    for link in &g.graph.links {
        let key = &g.graph.keys[link.key];
        let (from, to) = (
            format!("member:{}", link.member),
            key_node_id(key.attribute, &key.value),
        );
        match link.refused {
            None => edges.push(GraphEdge { from, to }),
            Some(why) => refused.push(GraphRefused {
                from,
                to,
                reason: why.as_str(),
            }),
        }
    }
    Ok(axum::Json(GraphView {
        profile_id: g.graph.profile_id,
        nodes: members.chain(keys).collect(),
        edges,
        refused,
        truncated: g.graph.truncated,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExplainQuery {
    /// The member to explain the link to.
    #[serde(deserialize_with = "json::id")]
    #[param(value_type = ApiId)]
    other: Id,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PathStepView {
    pub member_id: Id,
    /// The key node linking this member to the previous one (null on the first step).
    pub attribute: Option<AttributeName>,
    pub value: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefusedLink {
    pub member_id: Id,
    pub attribute: AttributeName,
    pub value: String,
    pub profile_id: Id,
    pub other_profile_id: Id,
    /// `distinct_conflict` or `max_profile_size`.
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainView {
    pub same_profile: bool,
    pub path: Vec<PathStepView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedLink>,
}

/// The chain of links joining two members, or the refused link keeping them apart.
#[utoipa::path(get, path = "/chat/members/{member_id}/unification/explain", tag = "unification",
    params(MemberPath, ExplainQuery),
    responses((status = 200, body = ExplainView), (status = "4XX", body = ErrorBody)))]
async fn explain(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
    Query(q): Query<ExplainQuery>,
) -> ApiResult<axum::Json<ExplainView>> {
    let org = caller.org(&state, p.org_id)?;
    let e = state.runtime.explain(org.id, p.member_id, q.other).await?;
    Ok(axum::Json(ExplainView {
        same_profile: e.same_profile,
        path: e
            .path
            .into_iter()
            .map(|s| PathStepView {
                member_id: s.member_id,
                attribute: s.attribute.map(AttributeName),
                value: s.value,
            })
            .collect(),
        refused: e.refused.map(|r| RefusedLink {
            member_id: r.member_id,
            attribute: AttributeName(r.attribute),
            value: r.value,
            profile_id: r.profile_id,
            other_profile_id: r.other_profile_id,
            reason: r.reason.as_str().to_owned(),
        }),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UniInput {
    #[schema(value_type = EditableAttributeName)]
    pub unify_key: AttributeName,
    /// `null` clears the attribute.
    pub value: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeInput {
    #[schema(value_type = EditableAttributeName)]
    pub unify_key: AttributeName,
    /// Not empty nor only whitespace.
    #[schema(pattern = r"\S")]
    pub value: String,
}

/// Applies `op` to a member of an org the caller may use.
async fn member_op(
    state: &AppState,
    caller: &Caller,
    p: &MemberPath,
    op: MemberOp,
) -> ApiResult<axum::Json<MemberView>> {
    let org = caller.org(state, p.org_id)?;
    apply_member_op(state, org.id, p.member_id, op).await
}

/// Sets (or clears) one unify-key attribute of the member.
#[utoipa::path(put, path = "/chat/members/{member_id}/uni", tag = "unification",
    params(MemberPath), request_body = UniInput,
    responses((status = 200, body = MemberView), (status = "4XX", body = ErrorBody)))]
async fn uni(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
    Json(body): Json<UniInput>,
) -> ApiResult<axum::Json<MemberView>> {
    let op = MemberOp::Uni {
        attribute: body.unify_key.0,
        value: body.value,
    };
    member_op(&state, &caller, &p, op).await
}

/// Clears the member's unify-key attributes and editable columns, sets one key, and locks the
/// member's unification (SPEC 2.6).
#[utoipa::path(post, path = "/chat/members/{member_id}/change-unification", tag = "unification",
    params(MemberPath), request_body = ChangeInput,
    responses((status = 200, body = MemberView), (status = "4XX", body = ErrorBody)))]
async fn change_unification(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
    Json(body): Json<ChangeInput>,
) -> ApiResult<axum::Json<MemberView>> {
    let op = MemberOp::ChangeUnification {
        attribute: body.unify_key.0,
        value: body.value,
    };
    member_op(&state, &caller, &p, op).await
}

/// Clears the member's unify-key attributes: it becomes a singleton profile (SPEC 2.6).
#[utoipa::path(post, path = "/chat/members/{member_id}/cancel-unification", tag = "unification",
    params(MemberPath),
    responses((status = 200, body = MemberView), (status = "4XX", body = ErrorBody)))]
async fn cancel_unification(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
) -> ApiResult<axum::Json<MemberView>> {
    member_op(&state, &caller, &p, MemberOp::CancelUnification).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberMergeState {
    pub member_id: Id,
    pub is_finished: bool,
}

/// Whether no operation on the member is queued or running.
#[utoipa::path(get, path = "/chat/members/{member_id}/merge-state", tag = "unification",
    params(MemberPath),
    responses((status = 200, body = MemberMergeState), (status = "4XX", body = ErrorBody)))]
async fn member_merge_state(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<MemberPath>,
) -> ApiResult<axum::Json<MemberMergeState>> {
    let org = caller.org(&state, p.org_id)?;
    let is_finished = state
        .runtime
        .member_merge_state(org.id, p.member_id)
        .await?;
    Ok(axum::Json(MemberMergeState {
        member_id: p.member_id,
        is_finished,
    }))
}
