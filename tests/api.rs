//! The HTTP API end to end: the real server on loopback, a real HTTP client.

mod common;

use common::{Server, Tenant, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Creates a member and returns it.
async fn member(s: &Server, t: &Tenant, ext: &str, fields: Value) -> Value {
    s.create_member(t, ext, fields).await
}

fn id(v: &Value) -> u64 {
    v["id"].as_u64().unwrap()
}

async fn member_count(s: &Server, t: &Tenant) -> usize {
    let (status, page) = s.get(&t.path("/chat/members?limit=1000"), &t.admin).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["members"].as_array().unwrap().len()
}

#[tokio::test]
async fn seed_flow_unifies_changes_and_cancels() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let (status, setting) = s
        .post(
            &t.path("/organization/unify-scope-setting"),
            &t.admin,
            json!({ "unify_keys": [
                { "attribute": "display_email", "is_distinct": false },
                { "attribute": "custom_id", "is_distinct": false } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{setting}");
    assert_eq!(setting["unify_keys"], json!(["display_email", "custom_id"]));
    assert_eq!(setting["is_cdh_connected"], json!(false));
    assert_eq!(
        setting["orgs"],
        json!([{ "id": t.org_id, "source": "caac" }])
    );

    let a = member(
        &s,
        &t,
        "a",
        json!({ "display_email": "Kevin@Example.com " }),
    )
    .await;
    let b = member(
        &s,
        &t,
        "b",
        json!({ "display_email": "kevin@example.com", "original_name": "B" }),
    )
    .await;
    let c = member(&s, &t, "c", json!({ "custom_id": "K-1" })).await;
    assert_eq!(b["profile_id"], a["id"], "b joins a by normalized email");
    assert_eq!(c["profile_id"], c["id"]);

    let (status, u) = s
        .get(
            &t.path(&format!("/chat/members/{}/unification", id(&a))),
            &t.admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        u,
        json!({ "member_id": id(&a), "unify_members": [{
            "source": "caac", "channel_id": t.channel_id, "channel_name": "LINE", "type": "line",
            "member_id": id(&b), "original_name": "B", "external_member_id": "b",
            "last_message_at": null }] })
    );

    // change-unification moves b from a's profile to c's.
    let (status, moved) = s
        .post(
            &t.path(&format!("/chat/members/{}/change-unification", id(&b))),
            &t.admin,
            json!({ "unify_key": "custom_id", "value": "K-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        moved["profile_id"], b["id"],
        "b and c share a profile, named by the smaller id"
    );
    let (_, c_joined) = s
        .get(&t.path(&format!("/chat/members/{}", id(&c))), &t.admin)
        .await;
    assert_eq!(c_joined["profile_id"], b["id"]);
    assert_eq!(moved["manual_unification"], json!(true));
    assert_eq!(moved["display_email"], Value::Null);
    let (_, a_now) = s
        .get(&t.path(&format!("/chat/members/{}", id(&a))), &t.admin)
        .await;
    assert_eq!(a_now["profile_id"], a["id"]);
    let (_, profile) = s
        .get(
            &t.path(&format!("/chat/members/{}/unify-profile", id(&c))),
            &t.admin,
        )
        .await;
    assert_eq!(profile["member_ids"], json!([id(&b), id(&c)]));
    assert_eq!(profile["custom_id"], json!("K-1"));
    let (_, explain) = s
        .get(
            &t.path(&format!(
                "/chat/members/{}/unification/explain?other={}",
                id(&b),
                id(&c)
            )),
            &t.admin,
        )
        .await;
    assert_eq!(explain["same_profile"], json!(true));
    assert_eq!(explain["path"][1]["attribute"], json!("custom_id"));

    // cancel makes c a singleton again.
    let (status, cancelled) = s
        .post(
            &t.path(&format!("/chat/members/{}/cancel-unification", id(&c))),
            &t.admin,
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["profile_id"], c["id"]);
    let (_, b_now) = s
        .get(&t.path(&format!("/chat/members/{}", id(&b))), &t.admin)
        .await;
    assert_eq!(b_now["profile_id"], b["id"]);

    // uni sets one key; PATCH releases the lock; merge states are finished.
    let (status, uni) = s
        .call(
            Method::PUT,
            &t.path(&format!("/chat/members/{}/uni", id(&c))),
            &t.admin,
            json!({ "unify_key": "display_email", "value": "kevin@example.com" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{uni}");
    assert_eq!(uni["profile_id"], a["id"]);
    let (_, patched) = s
        .call(
            Method::PATCH,
            &t.path(&format!("/chat/members/{}", id(&b))),
            &t.admin,
            json!({ "manual_unification": false, "display_name": "Bee" }),
        )
        .await;
    assert_eq!(patched["manual_unification"], json!(false));
    assert_eq!(patched["display_name"], json!("Bee"));
    let (_, ms) = s
        .get(
            &t.path(&format!("/chat/members/{}/merge-state", id(&b))),
            &t.admin,
        )
        .await;
    assert_eq!(ms, json!({ "member_id": id(&b), "is_finished": true }));
    let finished = eventually(|| async {
        let (_, ms) = s
            .get(
                &t.path("/organization/unify-scope-setting/merge-state"),
                &t.admin,
            )
            .await;
        ms == json!({ "org_id": t.org_id, "is_finished": true })
    })
    .await;
    assert!(finished);

    // delete erases the member; its profile is recomputed.
    let (status, _) = s
        .call(
            Method::DELETE,
            &t.path(&format!("/chat/members/{}", id(&a))),
            &t.admin,
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s
        .get(&t.path(&format!("/chat/members/{}", id(&a))), &t.admin)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, c_now) = s
        .get(&t.path(&format!("/chat/members/{}", id(&c))), &t.admin)
        .await;
    assert_eq!(c_now["profile_id"], c["id"]);
    s.stop().await;
}

#[tokio::test]
async fn creates_are_idempotent_and_pages_list_members() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let body = json!({ "channel_id": t.channel_id, "external_member_id": "same" });
    let path = t.path("/chat/members");
    let calls = (0..16).map(|_| s.post(&path, &t.admin, body.clone()));
    let results = futures_util::future::join_all(calls).await;
    let created = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "exactly one create wins");
    assert!(
        results
            .iter()
            .all(|(st, m)| st.is_success() && m["external_member_id"] == "same")
    );
    let ids: std::collections::HashSet<_> = results.iter().map(|(_, m)| id(m)).collect();
    assert_eq!(ids.len(), 1);

    for i in 0..5 {
        member(&s, &t, &format!("m{i}"), json!({})).await;
    }
    let (_, page) = s.get(&t.path("/chat/members?limit=4"), &t.admin).await;
    assert_eq!(page["members"].as_array().unwrap().len(), 4);
    let after = page["next_after"].as_u64().unwrap();
    let (_, rest) = s
        .get(
            &t.path(&format!("/chat/members?limit=4&after={after}")),
            &t.admin,
        )
        .await;
    assert_eq!(rest["members"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next_after"], Value::Null);
    let (_, one) = s
        .get(
            &t.path(&format!(
                "/chat/members?channel_id={}&external_member_id=m3",
                t.channel_id
            )),
            &t.admin,
        )
        .await;
    assert_eq!(one["members"][0]["external_member_id"], json!("m3"));
    s.stop().await;
}

#[tokio::test]
async fn members_need_the_right_channel_for_their_product() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let maac_id = s.org(&t.admin, "maac", "marketing").await;
    let (status, e) = s
        .post(
            &format!("/api/v1/orgs/{maac_id}/chat/members"),
            &t.admin,
            json!({ "channel_id": t.channel_id, "external_member_id": "x" }),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("INVALID_ARGUMENT"))
    );
    let (status, m) = s
        .post(
            &format!("/api/v1/orgs/{maac_id}/chat/members"),
            &t.admin,
            json!({ "external_member_id": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    assert_eq!(m["channel_id"], Value::Null);
    assert_eq!(m["source"], json!("maac"));
    let (status, e) = s
        .post(
            &t.path("/chat/members"),
            &t.admin,
            json!({ "external_member_id": "y" }),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("INVALID_ARGUMENT"))
    );
    let (status, e) = s
        .post(
            "/api/v1/applications/organizations",
            &t.admin,
            json!({ "source": "maac", "name": "again" }),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("ORGANIZATION_EXISTS"))
    );
    s.stop().await;
}

#[tokio::test]
async fn settings_conflicts_dry_run_and_hot_values() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let (_, empty) = s
        .get(&t.path("/organization/unify-scope-setting"), &t.admin)
        .await;
    assert_eq!(empty["unify_keys"], json!([]));
    for (i, email) in ["x@a.com", "x@a.com", "y@a.com"].iter().enumerate() {
        member(
            &s,
            &t,
            &format!("m{i}"),
            json!({ "display_email": email, "custom_id": "c" }),
        )
        .await;
    }
    let (status, dry) = s
        .post(
            &t.path("/organization/unify-scope-setting/dry-run"),
            &t.admin,
            json!({ "unify_keys": [{ "attribute": "display_email", "is_distinct": false }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["profiles_before"], json!(3));
    assert_eq!(dry["profiles_after"], json!(2));
    assert_eq!(dry["members_moved"], json!(1));
    let keys = json!({ "unify_keys": [{ "attribute": "display_email", "is_distinct": true }] });
    let (status, _) = s
        .post(
            &t.path("/organization/unify-scope-setting"),
            &t.admin,
            keys.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, e) = s
        .post(&t.path("/organization/unify-scope-setting"), &t.admin, keys)
        .await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("UNIFY_SCOPE_SETTING_EXISTS"))
    );
    let (status, setting) = s
        .call(
            Method::PUT,
            &t.path("/organization/unify-scope-setting/unify-keys"),
            &t.admin,
            json!({ "unify_keys": ["custom_id", "display_email"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{setting}");
    assert_eq!(setting["unify_keys"], json!(["custom_id", "display_email"]));
    let (_, admin) = s
        .get("/api/v1/applications/cdh/unify-scope-setting", &t.admin)
        .await;
    assert_eq!(
        admin["distinct_key"],
        json!("display_email"),
        "kept keys keep is_distinct"
    );
    let email_key = admin["unify_keys"][1]["id"].as_u64().unwrap();
    let (status, updated) = s
        .call(
            Method::PUT,
            &t.path(&format!("/organization/unify-keys/{email_key}")),
            &t.admin,
            json!({ "unify_key_attribute": "display_email", "is_distinct": false }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["distinct_key"], Value::Null);
    let (status, removed) = s
        .call(
            Method::DELETE,
            &t.path("/organization/unify-scope-setting/unify-keys/custom_id"),
            &t.admin,
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(removed["unify_keys"], json!(["display_email"]));
    let (status, hot) = s
        .get(
            &t.path("/organization/unify-scope-setting/hot-values"),
            &t.admin,
        )
        .await;
    assert_eq!((status, hot), (StatusCode::OK, json!([])));
    s.stop().await;
}

#[tokio::test]
async fn admin_center_integrates_and_disconnects() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    for prefix in ["/api/v1/applications/cdh", "/api/v1/application/cdh"] {
        let (status, e) = s
            .post(
                &format!("{prefix}/integrate"),
                &t.admin,
                json!({ "unify_keys": ["display_email"] }),
            )
            .await;
        assert_eq!(
            (status, e["error"]["code"].clone()),
            (StatusCode::CONFLICT, json!("MISSING_ORGANIZATION"))
        );
    }
    let maac_id = s.org(&t.admin, "maac", "m").await;
    let (_, orgs) = s
        .get("/api/v1/application/cdh/organizations", &t.admin)
        .await;
    assert_eq!(orgs.as_array().unwrap().len(), 2);
    let chat = member(&s, &t, "chat-1", json!({ "display_email": "p@x.com" })).await;
    let (_, mk) = s
        .post(
            &format!("/api/v1/orgs/{maac_id}/chat/members"),
            &t.admin,
            json!({ "external_member_id": "mk-1", "display_email": "p@x.com" }),
        )
        .await;
    let (status, setting) = s
        .post(
            "/api/v1/applications/cdh/integrate",
            &t.admin,
            json!({ "unify_keys": ["display_email"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{setting}");
    assert_eq!(setting["is_cdh_connected"], json!(true));
    assert_eq!(setting["orgs"].as_array().unwrap().len(), 2);
    let (status, e) = s
        .post(
            "/api/v1/application/cdh/integrate",
            &t.admin,
            json!({ "unify_keys": ["display_email"] }),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("CDH_ALREADY_CONNECTED"))
    );
    let joined = eventually(|| async {
        let (_, m) = s
            .get(
                &format!("/api/v1/orgs/{maac_id}/chat/members/{}", id(&mk)),
                &t.admin,
            )
            .await;
        m["profile_id"] == chat["id"]
    })
    .await;
    assert!(joined, "the maac member joins the caac member's profile");
    // Through the caac org's path, a maac member is explained only when it shares the profile.
    let (_, other) = s
        .post(
            &format!("/api/v1/orgs/{maac_id}/chat/members"),
            &t.admin,
            json!({ "external_member_id": "mk-2", "display_email": "q@x.com" }),
        )
        .await;
    let explain = |other: u64| {
        t.path(&format!(
            "/chat/members/{}/unification/explain?other={other}",
            id(&chat)
        ))
    };
    let (status, shared) = s.get(&explain(id(&mk)), &t.admin).await;
    assert_eq!(status, StatusCode::OK, "{shared}");
    assert_eq!(shared["same_profile"], json!(true));
    let (status, _) = s.get(&explain(id(&other)), &t.admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, e) = s
        .call(
            Method::PUT,
            &t.path("/organization/unify-scope-setting/unify-keys"),
            &t.admin,
            json!({ "unify_keys": ["custom_id"] }),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("CDH_ALREADY_CONNECTED"))
    );
    let (status, _) = s
        .call(
            Method::PUT,
            "/api/v1/applications/cdh/unify-scope-setting/unify-keys",
            &t.admin,
            json!({ "unify_keys": ["display_email", "custom_id"] }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the Admin Center may change keys while connected"
    );
    let finished = eventually(|| async {
        let (_, ms) = s
            .get(
                "/api/v1/applications/cdh/unify-scope-setting/merge-state",
                &t.admin,
            )
            .await;
        ms["is_finished"] == json!(true)
    })
    .await;
    assert!(finished);
    let (status, _) = s
        .post("/api/v1/applications/cdh/disconnect", &t.admin, Value::Null)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, e) = s
        .post("/api/v1/applications/cdh/disconnect", &t.admin, Value::Null)
        .await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("CDH_NOT_CONNECTED"))
    );
    let split = eventually(|| async {
        let (_, m) = s
            .get(
                &format!("/api/v1/orgs/{maac_id}/chat/members/{}", id(&mk)),
                &t.admin,
            )
            .await;
        m["profile_id"] == mk["id"]
    })
    .await;
    assert!(
        split,
        "after disconnect the maac member is on its own again"
    );
    let (_, maac_setting) = s
        .get(
            &format!("/api/v1/orgs/{maac_id}/organization/unify-scope-setting"),
            &t.admin,
        )
        .await;
    assert_eq!(
        maac_setting["unify_keys"],
        json!(["display_email", "custom_id"])
    );
    assert_ne!(maac_setting["unify_scope_id"], setting["unify_scope_id"]);
    s.stop().await;
}

#[tokio::test]
async fn no_token_of_one_account_reaches_another() {
    let s = Server::start().await;
    let t1 = s.tenant("one").await;
    let t2 = s.tenant("two").await;
    let m = member(&s, &t1, "private", json!({ "display_email": "p@one.com" })).await;
    let mid = id(&m);
    let other_agent = s.agent(t1.account_id, vec![t1.org_id + 1000]);
    let own_agent = s.agent(t1.account_id, vec![t1.org_id]);
    let org_routes: Vec<(Method, String, Value)> = vec![
        (Method::GET, "/channels".into(), Value::Null),
        (
            Method::POST,
            "/channels".into(),
            json!({ "name": "x", "type": "line" }),
        ),
        (
            Method::GET,
            format!("/channels/{}", t1.channel_id),
            Value::Null,
        ),
        (
            Method::PATCH,
            format!("/channels/{}", t1.channel_id),
            json!({ "name": "y" }),
        ),
        (Method::GET, "/chat/members".into(), Value::Null),
        (
            Method::POST,
            "/chat/members".into(),
            json!({ "channel_id": t1.channel_id, "external_member_id": "z" }),
        ),
        (Method::GET, format!("/chat/members/{mid}"), Value::Null),
        (
            Method::PATCH,
            format!("/chat/members/{mid}"),
            json!({ "display_name": "n" }),
        ),
        (Method::DELETE, format!("/chat/members/{mid}"), Value::Null),
        (Method::GET, "/imports/1".into(), Value::Null),
        (
            Method::GET,
            "/organization/unify-scope-setting".into(),
            Value::Null,
        ),
        (
            Method::POST,
            "/organization/unify-scope-setting".into(),
            json!({ "unify_keys": [] }),
        ),
        (
            Method::PUT,
            "/organization/unify-scope-setting/unify-keys".into(),
            json!({ "unify_keys": [] }),
        ),
        (
            Method::DELETE,
            "/organization/unify-scope-setting/unify-keys/custom_id".into(),
            Value::Null,
        ),
        (
            Method::POST,
            "/organization/unify-scope-setting/dry-run".into(),
            json!({ "unify_keys": [] }),
        ),
        (
            Method::GET,
            "/organization/unify-scope-setting/merge-state".into(),
            Value::Null,
        ),
        (
            Method::GET,
            "/organization/unify-scope-setting/hot-values".into(),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/chat/members/{mid}/unification"),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/chat/members/{mid}/unify-profile"),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/chat/members/{mid}/unification/explain?other={mid}"),
            Value::Null,
        ),
        (
            Method::PUT,
            format!("/chat/members/{mid}/uni"),
            json!({ "unify_key": "custom_id", "value": "v" }),
        ),
        (
            Method::POST,
            format!("/chat/members/{mid}/change-unification"),
            json!({ "unify_key": "custom_id", "value": "v" }),
        ),
        (
            Method::POST,
            format!("/chat/members/{mid}/cancel-unification"),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/chat/members/{mid}/merge-state"),
            Value::Null,
        ),
    ];
    for (method, rest, body) in &org_routes {
        for token in [&t2.admin, &other_agent] {
            let (status, e) = s
                .call(method.clone(), &t1.path(rest), token, body.clone())
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {rest}: {e}");
            assert_eq!(e["error"]["code"], json!("NOT_FOUND"));
        }
        // The member of org 1 is not visible through org 2's paths either.
        if rest.contains(&mid.to_string()) {
            let (status, _) = s
                .call(method.clone(), &t2.path(rest), &t2.admin, body.clone())
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {rest} via org 2");
        }
        let (status, e) = s
            .call(method.clone(), &t1.path(rest), &s.root(), body.clone())
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "root on {method} {rest}: {e}"
        );
    }
    // Nothing of org 1 changed.
    let (_, still) = s
        .get(&t1.path(&format!("/chat/members/{mid}")), &own_agent)
        .await;
    assert_eq!(still, m);
    assert_eq!(member_count(&s, &t1).await, 1);
    // Agents may not use the Admin Center or create orgs; admins may not create accounts.
    let (status, _) = s
        .get("/api/v1/applications/cdh/unify-scope-setting", &own_agent)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .post(
            "/api/v1/applications/organizations",
            &own_agent,
            json!({ "source": "maac", "name": "m" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .post("/api/v1/accounts", &t1.admin, json!({ "name": "x" }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A platform token only for a visible org.
    let (status, p) = s
        .post(
            "/api/v1/platform/token",
            &own_agent,
            json!({ "org_id": t1.org_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let (status, _) = s
        .post(
            "/api/v1/platform/token",
            &t2.admin,
            json!({ "org_id": t1.org_id }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let valid = json!({ "sub": "a", "role": "admin", "account_id": t.account_id,
        "iat": now(), "exp": now() + 600, "aud": "unify-api", "iss": "unify" });
    let with = |k: &str, v: Value| {
        let mut c = valid.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = valid.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(valid.to_string().as_bytes())
    );
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &valid,
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes()),
    )
    .unwrap();
    let cases = [
        (
            "expired",
            signed(common::SECRET, with("exp", json!(now() - 120))),
        ),
        ("forged", signed("another-secret", valid.clone())),
        ("alg none", alg_none),
        ("alg HS512", hs512),
        (
            "wrong aud",
            signed(common::SECRET, with("aud", json!("platform"))),
        ),
        (
            "wrong iss",
            signed(common::SECRET, with("iss", json!("evil"))),
        ),
        ("no iat", signed(common::SECRET, without("iat"))),
        ("no sub", signed(common::SECRET, without("sub"))),
        ("no exp", signed(common::SECRET, without("exp"))),
        ("garbage", "not.a.token".to_owned()),
        ("empty", String::new()),
    ];
    for (name, token) in cases {
        let (status, e) = s.get(&t.path("/chat/members"), &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {e}");
        assert_eq!(e["error"]["code"], json!("UNAUTHENTICATED"), "{name}");
    }
    let response = s
        .client
        .get(format!("{}{}", s.base, t.path("/chat/members")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "no token at all"
    );
    // Within the 30 s leeway an expired token still works.
    let (status, _) = s
        .get(
            &t.path("/chat/members"),
            &signed(common::SECRET, with("exp", json!(now() - 5))),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

/// One bad request: name, method, path, content type, body, expected status and code.
type BadInput<'a> = (
    &'a str,
    Method,
    String,
    Option<&'a str>,
    Vec<u8>,
    StatusCode,
    &'a str,
);

/// Sends a raw body with a content type and returns status and error code.
async fn raw(
    s: &Server,
    method: Method,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let (status, value) = s.send(method, path, token, content_type, body).await;
    assert!(!value.is_null(), "no body ({status})");
    (status, value["error"]["code"].clone())
}

#[tokio::test]
async fn bad_inputs_are_refused_with_their_code_and_write_nothing() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let existing = member(&s, &t, "keep", json!({ "display_email": "k@x.com" })).await;
    let mid = id(&existing);
    let json_ct = Some("application/json");
    let members = t.path("/chat/members");
    let big = format!(
        r#"{{"channel_id":{},"external_member_id":"{}"}}"#,
        t.channel_id,
        "x".repeat(1024 * 1024 + 10)
    );
    let cases: Vec<BadInput> = vec![
        ("malformed json", Method::POST, members.clone(), json_ct, b"{\"channel_id\":".to_vec(), StatusCode::BAD_REQUEST, "MALFORMED_JSON"),
        ("empty body", Method::POST, members.clone(), json_ct, Vec::new(), StatusCode::BAD_REQUEST, "MALFORMED_JSON"),
        ("invalid utf-8", Method::POST, members.clone(), json_ct, b"{\"external_member_id\":\"\xff\xfe\"}".to_vec(), StatusCode::BAD_REQUEST, "MALFORMED_JSON"),
        ("wrong type", Method::POST, members.clone(), json_ct, format!(r#"{{"channel_id":"{}","external_member_id":"n"}}"#, t.channel_id).into_bytes(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("unknown field", Method::POST, members.clone(), json_ct, format!(r#"{{"channel_id":{},"external_member_id":"n","nickname":"x"}}"#, t.channel_id).into_bytes(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("huge number", Method::POST, members.clone(), json_ct, br#"{"channel_id":123456789012345678901234567890,"external_member_id":"n"}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("negative id", Method::POST, members.clone(), json_ct, br#"{"channel_id":-1,"external_member_id":"n"}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("empty external id", Method::POST, members.clone(), json_ct, format!(r#"{{"channel_id":{},"external_member_id":"  "}}"#, t.channel_id).into_bytes(), StatusCode::BAD_REQUEST, "EMPTY_EXTERNAL_ID"),
        ("unknown channel", Method::POST, members.clone(), json_ct, br#"{"channel_id":999,"external_member_id":"n"}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("bad timestamp", Method::POST, members.clone(), json_ct, format!(r#"{{"channel_id":{},"external_member_id":"n","last_message_at":"yesterday"}}"#, t.channel_id).into_bytes(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("wrong content type", Method::POST, members.clone(), Some("text/plain"), format!(r#"{{"channel_id":{},"external_member_id":"n"}}"#, t.channel_id).into_bytes(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
        ("no content type", Method::POST, members.clone(), None, format!(r#"{{"channel_id":{},"external_member_id":"n"}}"#, t.channel_id).into_bytes(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
        ("oversized body", Method::POST, members.clone(), json_ct, big.into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        ("non-numeric org id", Method::GET, "/api/v1/orgs/abc/chat/members".into(), None, Vec::new(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("non-numeric member id", Method::GET, t.path("/chat/members/1x"), None, Vec::new(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("overflowing member id", Method::GET, t.path("/chat/members/99999999999999999999999"), None, Vec::new(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("limit too large", Method::GET, t.path("/chat/members?limit=1001"), None, Vec::new(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("unknown query", Method::GET, t.path("/chat/members?colour=red"), None, Vec::new(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("unknown attribute", Method::PUT, t.path(&format!("/chat/members/{mid}/uni")), json_ct, br#"{"unify_key":"nickname","value":"x"}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("uni of external id", Method::PUT, t.path(&format!("/chat/members/{mid}/uni")), json_ct, br#"{"unify_key":"external_member_id","value":"x"}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("unknown key attribute", Method::POST, t.path("/organization/unify-scope-setting"), json_ct, br#"{"unify_keys":[{"attribute":"shoe_size","is_distinct":false}]}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("two distinct keys", Method::POST, t.path("/organization/unify-scope-setting"), json_ct, br#"{"unify_keys":[{"attribute":"custom_id","is_distinct":true},{"attribute":"display_email","is_distinct":true}]}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("duplicate key", Method::PUT, t.path("/organization/unify-scope-setting/unify-keys"), json_ct, br#"{"unify_keys":["custom_id","custom_id"]}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("bad channel type", Method::POST, t.path("/channels"), json_ct, br#"{"name":"x","type":"pager"}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("empty account name", Method::POST, "/api/v1/accounts".into(), json_ct, br#"{"name":" "}"#.to_vec(), StatusCode::FORBIDDEN, "FORBIDDEN"),
        ("unknown source", Method::POST, "/api/v1/applications/organizations".into(), json_ct, br#"{"source":"xaac","name":"x"}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ("unknown route", Method::GET, "/api/v1/nothing".into(), None, Vec::new(), StatusCode::NOT_FOUND, "NOT_FOUND"),
        ("wrong method", Method::PUT, "/api/v1/accounts".into(), json_ct, b"{}".to_vec(), StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT"),
        ("import wrong type", Method::POST, t.path("/chat/members/import"), json_ct, b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
    ];
    for (name, method, path, ct, body, status, code) in cases {
        let got = raw(&s, method, &path, &t.admin, ct, body).await;
        assert_eq!(got, (status, json!(code)), "{name}");
    }
    let (status, code) = raw(
        &s,
        Method::POST,
        "/api/v1/accounts",
        &s.root(),
        json_ct,
        br#"{"name":" "}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (status, code),
        (StatusCode::BAD_REQUEST, json!("INVALID_ARGUMENT"))
    );
    assert_eq!(member_count(&s, &t).await, 1, "nothing was written");
    let (_, still) = s
        .get(&t.path(&format!("/chat/members/{mid}")), &t.admin)
        .await;
    assert_eq!(still, existing);
    let (_, setting) = s
        .get(&t.path("/organization/unify-scope-setting"), &t.admin)
        .await;
    assert_eq!(setting["unify_keys"], json!([]));
    let (_, channels) = s.get(&t.path("/channels"), &t.admin).await;
    assert_eq!(channels.as_array().unwrap().len(), 1);
    s.stop().await;
}

/// Sends `request`; returns the status and the JSON body (`Value::Null` when empty).
async fn status_and_body(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn oversized_request_heads_are_refused_with_the_error_body_and_write_nothing() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let members = format!("{}{}", s.base, t.path("/chat/members"));
    let create = |ext: &str| {
        s.client
            .post(&members)
            .bearer_auth(&t.admin)
            .json(&json!({ "channel_id": t.channel_id, "external_member_id": ext }))
    };

    let long_uri = format!(
        "{members}?channel_id={}&external_member_id={}",
        t.channel_id,
        "u".repeat(20 * 1024)
    );
    let (status, body) = status_and_body(s.client.get(&long_uri).bearer_auth(&t.admin)).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG, "{body}");
    assert_eq!(body["error"]["code"], json!("INVALID_ARGUMENT"), "{body}");

    let mut many = create("many-headers");
    for i in 0..150 {
        many = many.header(format!("x-filler-{i}"), "1");
    }
    let (status, body) = status_and_body(many).await;
    assert_eq!(
        status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "{body}"
    );
    assert_eq!(body["error"]["code"], json!("INVALID_ARGUMENT"), "{body}");

    let large = create("large-header").header("x-filler", "v".repeat(80 * 1024));
    let (status, body) = status_and_body(large).await;
    assert_eq!(
        status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "{body}"
    );
    assert_eq!(body["error"]["code"], json!("INVALID_ARGUMENT"), "{body}");
    assert_eq!(member_count(&s, &t).await, 0);

    // Heads within the limits are served.
    let mut fine = create("fine");
    for i in 0..80 {
        fine = fine.header(format!("x-filler-{i}"), "v".repeat(512));
    }
    let (status, body) = status_and_body(fine).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let uri = format!(
        "{members}?channel_id={}&external_member_id={}",
        t.channel_id,
        "u".repeat(7 * 1024)
    );
    let (status, body) = status_and_body(s.client.get(&uri).bearer_auth(&t.admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn import_runs_as_a_job_with_per_line_errors() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let mut body = String::new();
    for i in 0..500 {
        body.push_str(&format!(
            "{{\"channel_id\":{},\"external_member_id\":\"imp-{i}\",\"display_email\":\"p{}@x.com\"}}\n",
            t.channel_id,
            i % 250
        ));
    }
    body.push_str("{not json}\n");
    body.push_str(&format!(
        "{{\"channel_id\":{},\"external_member_id\":\"\"}}\n",
        t.channel_id
    ));
    // A line longer than 1 MiB is refused (and never held whole in memory).
    body.push_str(&format!(
        "{{\"channel_id\":{},\"external_member_id\":\"{}\"}}\n",
        t.channel_id,
        "x".repeat(1024 * 1024 + 1)
    ));
    body.push_str(&format!(
        "{{\"channel_id\":{},\"external_member_id\":\"after-the-long-line\"}}\n",
        t.channel_id
    ));
    let job_id = s.start_import(t.org_id, &t.admin, body).await;
    let last = s.finished_import(t.org_id, &t.admin, job_id).await;
    assert_eq!(last["total"], json!(504));
    assert_eq!(last["done"], json!(501));
    assert_eq!(last["failed"], json!(3));
    assert_eq!(last["errors"][0]["line"], json!(501));
    assert_eq!(last["errors"][0]["code"], json!("MALFORMED_JSON"));
    assert_eq!(last["errors"][1]["code"], json!("EMPTY_EXTERNAL_ID"));
    assert_eq!(last["errors"][2]["line"], json!(503));
    assert_eq!(last["errors"][2]["code"], json!("PAYLOAD_TOO_LARGE"));
    assert_eq!(member_count(&s, &t).await, 501);
    s.stop().await;
}

#[tokio::test]
async fn openapi_metrics_and_health() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let (status, doc) = s.get("/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/accounts",
        "/api/v1/applications/organizations",
        "/api/v1/application/cdh/organizations",
        "/api/v1/applications/cdh/organizations",
        "/api/v1/platform/token",
        "/api/v1/orgs/{org_id}/channels/{channel_id}",
        "/api/v1/orgs/{org_id}/chat/members/import",
        "/api/v1/orgs/{org_id}/imports/{job_id}",
        "/api/v1/orgs/{org_id}/chat/members/{member_id}/unification/explain",
        "/api/v1/orgs/{org_id}/organization/unify-keys/{unify_key_id}",
        "/api/v1/applications/cdh/integrate",
        "/api/v1/application/cdh/disconnect",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    // Every documented path answers with something other than "no such route".
    for (path, ops) in paths {
        let concrete = path
            .replace("{org_id}", &t.org_id.to_string())
            .replace("{channel_id}", &t.channel_id.to_string())
            .replace("{attribute}", "custom_id")
            .replace(['{', '}'], "");
        for method in ops.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = s
                .client
                .request(method.clone(), format!("{}{}", s.base, concrete))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                !(status == StatusCode::NOT_FOUND
                    && body["error"]["message"] == json!("route not found"))
                    && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not served ({status})"
            );
        }
    }
    let (status, health) = s.get("/healthz", "").await;
    assert_eq!(
        (status, health),
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            "unify_http_requests_total{route=\"/api/v1/accounts\",method=\"POST\",status=\"201\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("unify_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("unify_scope_members{scope="));
    s.stop().await;
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let m = member(&s, &t, "durable", json!({ "custom_id": "c-1" })).await;
    let config = s.config.clone();
    let dir = s.stop().await;
    let s = Server::start_in(config).await;
    let (status, again) = s
        .get(&t.path(&format!("/chat/members/{}", id(&m))), &t.admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, m);
    s.stop().await;
    drop(dir);
}

#[tokio::test]
async fn channels_are_created_read_listed_and_updated_without_secrets() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let (status, created) = s
        .post(
            &t.path("/channels"),
            &t.admin,
            json!({ "name": "Feishu", "type": "feishu", "tenant_key": "t-1",
                    "contact_api": { "url": "http://127.0.0.1:9/v1", "token": "ct-secret" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["webhook_secret"].as_str().unwrap().len(), 64);
    assert_eq!(
        created["contact_api"],
        json!({ "url": "http://127.0.0.1:9/v1" })
    );
    let cid = id(&created);
    let (status, read) = s.get(&t.path(&format!("/channels/{cid}")), &t.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        read.get("webhook_secret").is_none(),
        "the secret is shown only once"
    );
    assert!(
        !read.to_string().contains("ct-secret"),
        "the token is never returned"
    );
    let (status, patched) = s
        .call(
            Method::PATCH,
            &t.path(&format!("/channels/{cid}")),
            &t.admin,
            json!({ "name": "Feishu CN", "contact_api": null }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], json!("Feishu CN"));
    assert_eq!(patched["contact_api"], Value::Null);
    assert_eq!(
        patched["tenant_key"],
        json!("t-1"),
        "absent fields are left alone"
    );
    let (_, list) = s.get(&t.path("/channels"), &t.admin).await;
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("LINE"), json!("Feishu CN")]);
    s.stop().await;
}
