//! Malformed input that used to slip through (issue 10): a JSON array where an object belongs,
//! ids beyond the documented range, invalid UTF-8 in a query, a token not valid yet, and an
//! OpenAPI document looser than the server. Each is refused with the SPEC 4.2 error body and
//! writes nothing.

mod common;

use common::{Server, Tenant, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An org with a member, a channel (auto-provisioning, with its secret), keys, and a maac org
/// so that integrate can be called.
struct World {
    server: Server,
    tenant: Tenant,
    member_id: u64,
    hook_channel: u64,
    hook_secret: String,
    key_id: u64,
}

async fn world() -> World {
    let server = Server::start().await;
    let tenant = server.tenant("hard").await;
    server.org(&tenant.admin, "maac", "hard marketing").await;
    let (status, member) = server
        .post(
            &tenant.path("/chat/members"),
            &tenant.admin,
            json!({ "channel_id": tenant.channel_id, "external_member_id": "U1",
                    "display_name": "Kevin" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let (status, channel) = server
        .post(
            &tenant.path("/channels"),
            &tenant.admin,
            json!({ "name": "Feishu", "type": "feishu", "tenant_key": "t-1",
                    "auto_provision": true }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    let (status, _) = server
        .post(
            &tenant.path("/organization/unify-scope-setting"),
            &tenant.admin,
            json!({ "unify_keys": [{ "attribute": "display_email", "is_distinct": false }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, admin_setting) = server
        .get(
            "/api/v1/applications/cdh/unify-scope-setting",
            &tenant.admin,
        )
        .await;
    World {
        member_id: member["id"].as_u64().unwrap(),
        hook_channel: channel["id"].as_u64().unwrap(),
        hook_secret: channel["webhook_secret"].as_str().unwrap().to_owned(),
        key_id: admin_setting["unify_keys"][0]["id"].as_u64().unwrap(),
        server,
        tenant,
    }
}

impl World {
    /// What every refused request must leave as it was.
    async fn state(&self) -> Vec<Value> {
        let t = &self.tenant;
        let mut state = Vec::new();
        for path in [
            t.path(&format!("/chat/members/{}", self.member_id)),
            t.path("/chat/members?limit=1000"),
            t.path("/channels"),
            t.path("/organization/unify-scope-setting"),
            "/api/v1/applications/cdh/unify-scope-setting".to_owned(),
            "/api/v1/application/cdh/organizations".to_owned(),
        ] {
            let (status, body) = self.server.get(&path, &t.admin).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            state.push(body);
        }
        state
    }

    async fn expect_invalid(&self, method: Method, path: &str, token: &str, body: &str) {
        let (status, reply) = self
            .server
            .send(
                method.clone(),
                path,
                token,
                Some("application/json"),
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")),
            "{method} {path} {body}: {reply}"
        );
    }

    async fn webhook(&self, raw: &str) -> (StatusCode, Value) {
        let path = self
            .tenant
            .path(&format!("/channels/{}/events", self.hook_channel));
        self.server
            .deliver_event(&path, &self.hook_secret, raw.as_bytes().to_vec())
            .await
    }
}

#[tokio::test]
async fn an_array_is_refused_wherever_an_object_belongs_and_writes_nothing() {
    let w = world().await;
    let t = &w.tenant;
    let m = w.member_id;
    let admin = t.admin.as_str();
    let root = w.server.root();
    // Each body would be read by position as the struct it stands for.
    let cases: Vec<(Method, String, &str, String)> = vec![
        (
            Method::POST,
            "/api/v1/accounts".into(),
            root.as_str(),
            r#"["other"]"#.into(),
        ),
        (
            Method::POST,
            "/api/v1/applications/organizations".into(),
            admin,
            r#"["caac", "dup"]"#.into(),
        ),
        (
            Method::POST,
            "/api/v1/platform/token".into(),
            admin,
            format!("[{}]", t.org_id),
        ),
        (
            Method::POST,
            t.path("/channels"),
            admin,
            r#"["Web", "webchat"]"#.into(),
        ),
        (
            Method::POST,
            t.path("/channels"),
            admin,
            r#"{"name": "Web", "type": "webchat", "contact_api": ["http://x.test", "tok"]}"#.into(),
        ),
        (
            Method::PATCH,
            t.path(&format!("/channels/{}", w.hook_channel)),
            admin,
            "[null, null]".into(),
        ),
        (
            Method::POST,
            t.path("/chat/members"),
            admin,
            format!(r#"[{}, "U2"]"#, t.channel_id),
        ),
        (
            Method::PATCH,
            t.path(&format!("/chat/members/{m}")),
            admin,
            r#"["pwned"]"#.into(),
        ),
        (
            Method::PUT,
            t.path(&format!("/chat/members/{m}/uni")),
            admin,
            r#"["display_email", "a@b.c"]"#.into(),
        ),
        (
            Method::POST,
            t.path(&format!("/chat/members/{m}/change-unification")),
            admin,
            r#"["display_email", "a@b.c"]"#.into(),
        ),
        (
            Method::POST,
            t.path("/organization/unify-scope-setting/dry-run"),
            admin,
            r#"[[["custom_id", false]]]"#.into(),
        ),
        (
            Method::POST,
            t.path("/organization/unify-scope-setting/dry-run"),
            admin,
            r#"{"unify_keys": [["custom_id", false]]}"#.into(),
        ),
        (
            Method::PUT,
            t.path("/organization/unify-scope-setting/unify-keys"),
            admin,
            r#"[["custom_id"]]"#.into(),
        ),
        (
            Method::PUT,
            t.path(&format!("/organization/unify-keys/{}", w.key_id)),
            admin,
            r#"["custom_id", true]"#.into(),
        ),
        (
            Method::PUT,
            "/api/v1/applications/cdh/unify-scope-setting/unify-keys".into(),
            admin,
            r#"[["custom_id"]]"#.into(),
        ),
        (
            Method::PUT,
            "/api/v1/application/cdh/unify-scope-setting/unify-keys".into(),
            admin,
            r#"[["custom_id"]]"#.into(),
        ),
        (
            Method::POST,
            "/api/v1/applications/cdh/integrate".into(),
            admin,
            r#"[["custom_id"]]"#.into(),
        ),
    ];
    let before = w.state().await;
    for (method, path, token, body) in &cases {
        w.expect_invalid(method.clone(), path, token, body).await;
    }
    // The create-setting endpoint refuses its array before it looks at existing keys.
    let fresh = w.server.tenant("fresh").await;
    w.expect_invalid(
        Method::POST,
        &fresh.path("/organization/unify-scope-setting"),
        &fresh.admin,
        r#"[[["custom_id", false]]]"#,
    )
    .await;
    let (_, setting) = w
        .server
        .get(
            &fresh.path("/organization/unify-scope-setting"),
            &fresh.admin,
        )
        .await;
    assert_eq!(setting["unify_keys"], json!([]));
    assert_eq!(w.state().await, before);

    // A webhook event as an array is refused; its event id was not recorded.
    let (status, reply) = w.webhook(r#"["e1", "message", "t-1", ["ou_x"]]"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["error"]["code"], "INVALID_ARGUMENT");
    let (status, reply) = w
        .webhook(
            r#"{"event_id": "e1", "type": "message", "tenant_key": "t-1", "sender": ["ou_x"]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, reply) = w
        .webhook(r#"{"event_id": "e1", "type": "follow", "tenant_key": "t-1", "sender": {"external_member_id": "ou_y"}}"#)
        .await;
    assert_eq!(
        (status, &reply["status"]),
        (StatusCode::ACCEPTED, &json!("accepted"))
    );
    let provisioned = eventually(|| async {
        let (_, page) = w
            .server
            .get(
                &t.path(&format!(
                    "/chat/members?channel_id={}&external_member_id=ou_y",
                    w.hook_channel
                )),
                admin,
            )
            .await;
        page["members"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    assert!(provisioned);
    let (_, page) = w
        .server
        .get(
            &t.path(&format!(
                "/chat/members?channel_id={}&external_member_id=ou_x",
                w.hook_channel
            )),
            admin,
        )
        .await;
    assert_eq!(page["members"], json!([]));
}

#[tokio::test]
async fn an_import_line_that_is_an_array_is_refused() {
    let w = world().await;
    let t = &w.tenant;
    let body = format!(
        "[{c}, \"I1\"]\n{{\"channel_id\": {c}, \"external_member_id\": \"I2\"}}\n\"I3\"\n",
        c = t.channel_id
    );
    let job = w.server.start_import(t.org_id, &t.admin, body).await;
    let last = w.server.finished_import(t.org_id, &t.admin, job).await;
    assert_eq!(
        (
            last["done"].as_u64(),
            last["failed"].as_u64(),
            last["total"].as_u64()
        ),
        (Some(1), Some(2), Some(3)),
        "{last}"
    );
    let lines: Vec<_> = last["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (1, "INVALID_ARGUMENT".to_owned()),
            (3, "INVALID_ARGUMENT".to_owned())
        ]
    );
    for (ext, count) in [("I1", 0), ("I2", 1)] {
        let (_, page) = w
            .server
            .get(
                &t.path(&format!(
                    "/chat/members?channel_id={}&external_member_id={ext}",
                    t.channel_id
                )),
                &t.admin,
            )
            .await;
        assert_eq!(page["members"].as_array().unwrap().len(), count, "{ext}");
    }
}

#[tokio::test]
async fn ids_outside_1_to_2_pow_63_minus_1_are_invalid() {
    let w = world().await;
    let t = &w.tenant;
    let admin = &t.admin;
    let big = "9223372036854775808";
    let max = "9223372036854775807";
    let m = w.member_id;
    for path in [
        t.path(&format!("/chat/members?channel_id={big}")),
        t.path(&format!("/chat/members?after={big}")),
        t.path("/chat/members?after=0"),
        t.path("/chat/members?channel_id=0&external_member_id=U1"),
        t.path(&format!("/chat/members/{big}")),
        t.path("/chat/members/0"),
        t.path(&format!(
            "/chat/members/{m}/unification/explain?other={big}"
        )),
        t.path(&format!("/channels/{big}")),
        t.path(&format!("/imports/{big}")),
        format!("/api/v1/orgs/{big}/chat/members"),
        "/api/v1/orgs/0/channels".to_owned(),
    ] {
        let (status, reply) = w.server.get(&path, admin).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")),
            "{path}: {reply}"
        );
    }
    // The largest id is accepted (and simply does not exist).
    for path in [
        t.path(&format!("/chat/members/{max}")),
        format!("/api/v1/orgs/{max}/chat/members"),
    ] {
        let (status, reply) = w.server.get(&path, admin).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {reply}");
    }
    let (status, page) = w
        .server
        .get(&t.path(&format!("/chat/members?after={max}")), admin)
        .await;
    assert_eq!((status, &page["members"]), (StatusCode::OK, &json!([])));
    // Ids in bodies are held to the same range.
    w.expect_invalid(
        Method::POST,
        "/api/v1/platform/token",
        admin,
        &format!(r#"{{"org_id": {big}}}"#),
    )
    .await;
    w.expect_invalid(
        Method::POST,
        &t.path("/chat/members"),
        admin,
        r#"{"channel_id": 0, "external_member_id": "Z"}"#,
    )
    .await;
}

#[tokio::test]
async fn invalid_utf8_in_a_query_is_refused_not_replaced() {
    let w = world().await;
    let t = &w.tenant;
    // A member whose id is U+FFFD: what a lossy decoding of %FF would find.
    let (status, _) = w
        .server
        .post(
            &t.path("/chat/members"),
            &t.admin,
            json!({ "channel_id": t.channel_id, "external_member_id": "\u{FFFD}" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let found = t.path(&format!(
        "/chat/members?channel_id={}&external_member_id=%EF%BF%BD",
        t.channel_id
    ));
    let (status, page) = w.server.get(&found, &t.admin).await;
    assert_eq!(
        (status, page["members"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    for query in [
        "external_member_id=%FF",
        "external_member_id=%C3%28",
        "%FF=1",
    ] {
        let path = t.path(&format!(
            "/chat/members?channel_id={}&{query}",
            t.channel_id
        ));
        let (status, reply) = w.server.get(&path, &t.admin).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")),
            "{query}: {reply}"
        );
    }
}

#[tokio::test]
async fn a_token_is_refused_before_its_nbf() {
    let w = world().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |nbf: u64| {
        let claims = json!({
            "sub": "admin", "role": "admin", "account_id": w.tenant.account_id, "org_ids": [],
            "iat": now, "exp": now + 3600, "aud": "unify-api", "iss": "unify", "nbf": nbf,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes()),
        )
        .unwrap()
    };
    let path = w.tenant.path("/channels");
    let (status, reply) = w.server.get(&path, &token(now + 365 * 86400)).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")),
        "{reply}"
    );
    let (status, _) = w.server.get(&path, &token(now + 120)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Within the 30 s leeway, or in the past: accepted.
    for nbf in [now + 10, now - 60] {
        let (status, reply) = w.server.get(&path, &token(nbf)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
}

/// Returns the schema `$ref` points to, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => schema,
    }
}

/// Calls `f` on every object schema reachable from `schema`.
fn objects<'a>(doc: &'a Value, schema: &'a Value, f: &mut impl FnMut(&'a Value)) {
    let schema = resolve(doc, schema);
    if schema["type"] == "object" {
        f(schema);
        if let Some(props) = schema["properties"].as_object() {
            for p in props.values() {
                objects(doc, p, f);
            }
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for s in schema[key].as_array().into_iter().flatten() {
            objects(doc, s, f);
        }
    }
    if schema["items"].is_object() {
        objects(doc, &schema["items"], f);
    }
}

#[tokio::test]
async fn the_openapi_document_states_what_the_server_enforces() {
    let server = Server::start().await;
    let (status, doc) = server.get("/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    let id_schema = json!({"type": "integer", "format": "int64", "minimum": 1,
        "maximum": i64::MAX});
    let mut checked_ids = 0;
    let mut checked_bodies = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                if name.ends_with("_id") && name != "external_member_id"
                    || name == "other"
                    || name == "after"
                {
                    let schema = resolve(&doc, &p["schema"]);
                    for (k, v) in id_schema.as_object().unwrap() {
                        assert_eq!(&schema[k], v, "{method} {path} {name}: {schema}");
                    }
                    checked_ids += 1;
                }
                if name == "limit" {
                    assert_eq!(
                        (
                            p["schema"]["minimum"].as_u64(),
                            p["schema"]["maximum"].as_u64()
                        ),
                        (Some(1), Some(1000)),
                        "{path}"
                    );
                }
            }
            for (content_type, body) in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                if content_type == "application/x-ndjson" {
                    continue;
                }
                assert_eq!(content_type, "application/json", "{method} {path}");
                checked_bodies += 1;
                objects(&doc, &body["schema"], &mut |object| {
                    assert_eq!(
                        object["additionalProperties"],
                        json!(false),
                        "{method} {path}: {object}"
                    );
                });
            }
        }
    }
    assert!(
        checked_ids >= 40 && checked_bodies >= 15,
        "{checked_ids} {checked_bodies}"
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["AttributeName"]["enum"],
        json!([
            "display_email",
            "display_mobile",
            "custom_id",
            "line_id",
            "connect_id",
            "external_member_id"
        ])
    );
    // Member operations may not set the attribute that identifies the member.
    for input in ["UniInput", "ChangeInput"] {
        let key = resolve(&doc, &schemas[input]["properties"]["unify_key"]);
        assert_eq!(
            key["enum"],
            json!([
                "display_email",
                "display_mobile",
                "custom_id",
                "line_id",
                "connect_id"
            ]),
            "{input}"
        );
    }
    let member = &schemas["MemberInput"];
    assert_eq!(member["required"], json!(["external_member_id"]));
    assert_eq!(
        member["properties"]["last_message_at"]["format"],
        "date-time"
    );
    assert!(member["properties"]["external_member_id"]["pattern"].is_string());
    let channel = &schemas["CreateChannel"];
    assert_eq!(
        channel["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let import = &doc["paths"]["/api/v1/orgs/{org_id}/chat/members/import"]["post"];
    assert!(
        import["requestBody"]["content"]["application/x-ndjson"].is_object(),
        "{import}"
    );
    assert_eq!(import["requestBody"]["required"], json!(true));
}
