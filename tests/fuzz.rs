//! Fuzzing the API's input side (SPEC 10): random bodies, content types and path segments get a
//! 4xx with the error body (or a success for a valid request), never a 5xx or a hang, and a
//! refused request writes nothing.

mod common;

use std::sync::OnceLock;

use common::{Server, Tenant};
use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: Server,
    tenant: Tenant,
    member_id: u64,
    /// An org only the "writes nothing" property posts to, so that other properties running
    /// at the same time cannot change what it compares.
    quiet: Tenant,
    /// An auto-provisioning channel of `tenant` and its webhook secret.
    hook: (u64, String),
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (server, tenant, member_id, quiet, hook) = rt.block_on(async {
            let server = Server::start().await;
            let tenant = server.tenant("fuzz").await;
            let (_, m) = server
                .post(
                    &tenant.path("/chat/members"),
                    &tenant.admin,
                    json!({ "channel_id": tenant.channel_id, "external_member_id": "seed" }),
                )
                .await;
            let quiet = server.tenant("quiet").await;
            let (_, channel) = server
                .post(
                    &tenant.path("/channels"),
                    &tenant.admin,
                    json!({ "name": "hook", "type": "feishu", "tenant_key": "t-1",
                            "auto_provision": true }),
                )
                .await;
            let hook = (
                channel["id"].as_u64().unwrap(),
                channel["webhook_secret"].as_str().unwrap().to_owned(),
            );
            (server, tenant, m["id"].as_u64().unwrap(), quiet, hook)
        });
        Fixture {
            rt,
            server,
            tenant,
            member_id,
            quiet,
            hook,
        }
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z_]{0,12}".prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("external_member_id".to_owned()),
                    Just("channel_id".to_owned()),
                    Just("unify_key".to_owned()),
                    Just("value".to_owned()),
                    Just("unify_keys".to_owned()),
                    Just("display_email".to_owned()),
                    Just("name".to_owned()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The routes fuzzed, relative to the org (`{m}` is the seeded member).
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/chat/members"),
    ("PATCH", "/chat/members/{m}"),
    ("PUT", "/chat/members/{m}/uni"),
    ("POST", "/chat/members/{m}/change-unification"),
    ("POST", "/organization/unify-scope-setting/dry-run"),
    ("PUT", "/organization/unify-scope-setting/unify-keys"),
    ("POST", "/channels"),
    ("PATCH", "/channels/{c}"),
];

/// Every endpoint that reads a JSON body: (method, path, who calls it). Org-scoped paths are
/// relative to the org (`{m}` the seeded member, `{c}` its channel, `{h}` the webhook channel,
/// `{k}` a key id); the others start with `/api/v1`.
const JSON_ENDPOINTS: &[(&str, &str, Caller)] = &[
    ("POST", "/api/v1/accounts", Caller::Root),
    ("POST", "/api/v1/applications/organizations", Caller::Admin),
    ("POST", "/api/v1/platform/token", Caller::Admin),
    (
        "PUT",
        "/api/v1/applications/cdh/unify-scope-setting/unify-keys",
        Caller::Admin,
    ),
    (
        "PUT",
        "/api/v1/application/cdh/unify-scope-setting/unify-keys",
        Caller::Admin,
    ),
    ("POST", "/api/v1/applications/cdh/integrate", Caller::Admin),
    ("POST", "/api/v1/application/cdh/integrate", Caller::Admin),
    ("POST", "/channels", Caller::Admin),
    ("PATCH", "/channels/{c}", Caller::Admin),
    ("POST", "/channels/{h}/events", Caller::Webhook),
    ("POST", "/chat/members", Caller::Admin),
    ("PATCH", "/chat/members/{m}", Caller::Admin),
    ("PUT", "/chat/members/{m}/uni", Caller::Admin),
    (
        "POST",
        "/chat/members/{m}/change-unification",
        Caller::Admin,
    ),
    ("POST", "/organization/unify-scope-setting", Caller::Admin),
    (
        "PUT",
        "/organization/unify-scope-setting/unify-keys",
        Caller::Admin,
    ),
    (
        "POST",
        "/organization/unify-scope-setting/dry-run",
        Caller::Admin,
    ),
    ("PUT", "/organization/unify-keys/{k}", Caller::Admin),
];

#[derive(Debug, Clone, Copy)]
enum Caller {
    Root,
    Admin,
    /// Signed with the webhook channel's secret instead of a token.
    Webhook,
}

/// A JSON document that is not an object: what no endpoint accepts as its body.
fn non_object() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(json_value(), 0..5).prop_map(Value::from),
        Just(json!([])),
        "\\PC{0,20}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

async fn send(
    f: &Fixture,
    token: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    f.server
        .send(method, path, token, Some(content_type), body)
        .await
}

fn check(status: StatusCode, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(!status.is_server_error(), "5xx: {status} {body}");
    if status.is_client_error() {
        prop_assert!(
            body["error"]["code"].is_string(),
            "no error body: {status} {body}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_json_bodies_never_fail_the_server(route in 0..ROUTES.len(), body in json_value()) {
        let f = fixture();
        let (method, rest) = ROUTES[route];
        let rest = rest
            .replace("{m}", &f.member_id.to_string())
            .replace("{c}", &f.tenant.channel_id.to_string());
        let path = f.tenant.path(&rest);
        let (status, reply) = f.rt.block_on(send(f, &f.tenant.admin, method, &path, "application/json", body.to_string().into_bytes()));
        check(status, &reply)?;
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused_everywhere(
        endpoint in 0..JSON_ENDPOINTS.len(),
        body in non_object(),
    ) {
        let f = fixture();
        let (method, rest, caller) = JSON_ENDPOINTS[endpoint];
        let rest = rest
            .replace("{m}", &f.member_id.to_string())
            .replace("{c}", &f.tenant.channel_id.to_string())
            .replace("{h}", &f.hook.0.to_string())
            .replace("{k}", "1");
        let path = if rest.starts_with("/api/") { rest } else { f.tenant.path(&rest) };
        let raw = body.to_string().into_bytes();
        let (status, reply) = f.rt.block_on(async {
            match caller {
                Caller::Root => send(f, &f.server.root(), method, &path, "application/json", raw).await,
                Caller::Admin => send(f, &f.tenant.admin, method, &path, "application/json", raw).await,
                Caller::Webhook => f.server.deliver_event(&path, &f.hook.1, raw).await,
            }
        });
        check(status, &reply)?;
        prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{} {} {}: {}", method, path, body, reply);
        let code = reply["error"]["code"].as_str().unwrap_or_default();
        prop_assert!(code == "INVALID_ARGUMENT" || code == "MALFORMED_JSON", "{}", reply);
    }

    #[test]
    fn random_bytes_are_refused_and_write_nothing(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        content_type in prop_oneof![Just("application/json".to_owned()), Just("text/plain".to_owned()), Just("application/x-ndjson".to_owned()), "[a-z/+-]{0,20}"],
    ) {
        let f = fixture();
        prop_assume!(serde_json::from_slice::<Value>(&bytes).is_err());
        let path = f.quiet.path("/chat/members");
        let (before, after, status, reply) = f.rt.block_on(async {
            let (_, before) = f.server.get(&format!("{path}?limit=1000"), &f.quiet.admin).await;
            let (status, reply) = send(f, &f.quiet.admin, "POST", &path, &content_type, bytes).await;
            let (_, after) = f.server.get(&format!("{path}?limit=1000"), &f.quiet.admin).await;
            (before, after, status, reply)
        });
        check(status, &reply)?;
        prop_assert!(status.is_client_error(), "{status}");
        prop_assert_eq!(before, after);
    }

    #[test]
    fn random_path_segments_are_4xx(segment in "[^/?#]{1,24}", route in 0..4usize) {
        let f = fixture();
        let encoded: String = segment.bytes().map(|b| format!("%{b:02X}")).collect();
        let path = match route {
            0 => format!("/api/v1/orgs/{encoded}/chat/members"),
            1 => f.tenant.path(&format!("/chat/members/{encoded}")),
            2 => f.tenant.path(&format!("/channels/{encoded}")),
            _ => f.tenant.path(&format!("/organization/unify-scope-setting/unify-keys/{encoded}")),
        };
        let method = if route == 3 { "DELETE" } else { "GET" };
        let (status, reply) = f.rt.block_on(send(f, &f.tenant.admin, method, &path, "application/json", Vec::new()));
        check(status, &reply)?;
    }
}
