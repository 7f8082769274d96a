//! The key-value lookup of members (`GET /chat/members?attribute=&value=`, SPEC 4.4) and the
//! profile graph (`GET /chat/members/:id/unify-profile/graph`, SPEC 4.5), end to end: the real
//! server on loopback, a real HTTP client.

mod common;

use common::{Server, Tenant};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Creates a member and returns its id.
async fn member(s: &Server, t: &Tenant, ext: &str, fields: Value) -> u64 {
    s.create_member(t, ext, fields).await["id"]
        .as_u64()
        .unwrap()
}

async fn keys(s: &Server, t: &Tenant, keys: Value) {
    let (status, setting) = s
        .post(
            &t.path("/organization/unify-scope-setting"),
            &t.admin,
            json!({ "unify_keys": keys }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{setting}");
}

/// The ids of a page of members.
fn ids(page: &Value) -> Vec<u64> {
    page["members"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

fn find(t: &Tenant, attribute: &str, value: &str) -> String {
    let value: String = url_encode(value);
    t.path(&format!(
        "/chat/members?attribute={attribute}&value={value}"
    ))
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn members_are_found_by_a_key_value_normalized_as_for_linking() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    keys(
        &s,
        &t,
        json!([{ "attribute": "display_mobile", "is_distinct": false },
               { "attribute": "display_email", "is_distinct": false }]),
    )
    .await;
    let a = member(&s, &t, "a", json!({ "display_mobile": "0912 345 678" })).await;
    let b = member(&s, &t, "b", json!({ "display_email": "Kevin@Example.com" })).await;
    let c = member(
        &s,
        &t,
        "c",
        json!({ "display_mobile": "+886912345678", "custom_id": "C1" }),
    )
    .await;
    member(&s, &t, "d", json!({ "display_mobile": "0911 111 111" })).await;

    for written in ["0912-345-678", "+886 912 345 678", "0912345678"] {
        let (status, page) = s.get(&find(&t, "display_mobile", written), &t.admin).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(ids(&page), vec![a, c], "{written}");
    }
    let (_, page) = s
        .get(&find(&t, "display_email", " kevin@EXAMPLE.com"), &t.admin)
        .await;
    assert_eq!(ids(&page), vec![b]);
    assert_eq!(
        page["members"][0]["display_email"],
        json!("Kevin@Example.com")
    );

    // A value that does not link, an unknown value and an attribute that is not a key of the
    // scope find nothing.
    for (attribute, value) in [
        ("display_mobile", "not a number"),
        ("display_email", "nobody@example.com"),
        ("display_email", "   "),
        ("custom_id", "C1"),
    ] {
        let (status, page) = s.get(&find(&t, attribute, value), &t.admin).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(ids(&page), Vec::<u64>::new(), "{attribute}={value}");
        assert_eq!(page["next_after"], Value::Null);
    }

    // Pages.
    let path = format!("{}&limit=1", find(&t, "display_mobile", "0912345678"));
    let (_, first) = s.get(&path, &t.admin).await;
    assert_eq!(
        (ids(&first), first["next_after"].as_u64()),
        (vec![a], Some(a))
    );
    let (_, second) = s.get(&format!("{path}&after={a}"), &t.admin).await;
    assert_eq!(ids(&second), vec![c]);
}

#[tokio::test]
async fn a_key_value_lookup_refuses_bad_queries_and_other_accounts() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let other = s.tenant("other").await;
    keys(
        &s,
        &t,
        json!([{ "attribute": "display_email", "is_distinct": false }]),
    )
    .await;
    keys(
        &s,
        &other,
        json!([{ "attribute": "display_email", "is_distinct": false }]),
    )
    .await;
    member(&s, &t, "a", json!({ "display_email": "kevin@example.com" })).await;
    let theirs = member(
        &s,
        &other,
        "a",
        json!({ "display_email": "kevin@example.com" }),
    )
    .await;

    let members = t.path("/chat/members");
    for query in [
        "?attribute=nickname&value=x",
        "?attribute=display_email",
        "?value=kevin@example.com",
        "?attribute=display_email&value=x&external_member_id=a",
        &format!(
            "?attribute=display_email&value=x&channel_id={}",
            t.channel_id
        ),
        "?attribute=display_email&value=x&limit=0",
        "?attribute=display_email&value=x&limit=1001",
        "?attribute=display_email&value=x&color=red",
    ] {
        let (status, body) = s.get(&format!("{members}{query}"), &t.admin).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(code(&body), "INVALID_ARGUMENT", "{query}: {body}");
    }

    // Another account's admin does not see the org; the org's own lookup never returns another
    // org's member holding the same value.
    let (status, body) = s
        .get(
            &find(&t, "display_email", "kevin@example.com"),
            &other.admin,
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (_, page) = s
        .get(
            &find(&other, "display_email", "kevin@example.com"),
            &other.admin,
        )
        .await;
    assert_eq!(ids(&page), vec![theirs]);
    let agent = s.agent(t.account_id, vec![]);
    let (status, _) = s
        .get(&find(&t, "display_email", "kevin@example.com"), &agent)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Member `1` and `2` share an email; `3` holds it too but another distinct custom id than
/// `1`, so its link is refused; `4` is in another cluster.
async fn distinct_scope(s: &Server, t: &Tenant) -> [u64; 4] {
    keys(
        s,
        t,
        json!([{ "attribute": "custom_id", "is_distinct": true },
               { "attribute": "display_email", "is_distinct": false }]),
    )
    .await;
    [
        member(
            s,
            t,
            "m1",
            json!({ "display_email": "A@x.com", "custom_id": "C1" }),
        )
        .await,
        member(
            s,
            t,
            "m2",
            json!({ "display_email": "a@x.com", "display_name": "Two" }),
        )
        .await,
        member(
            s,
            t,
            "m3",
            json!({ "display_email": "a@x.com", "custom_id": "C2" }),
        )
        .await,
        member(s, t, "m4", json!({ "display_email": "z@x.com" })).await,
    ]
}

fn pairs(list: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn the_graph_draws_the_cluster_with_its_key_nodes_links_and_refused_links() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let [m1, m2, m3, m4] = distinct_scope(&s, &t).await;

    let (status, g) = s
        .get(
            &t.path(&format!("/chat/members/{m2}/unify-profile/graph")),
            &t.admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{g}");
    assert_eq!(g["profile_id"], json!(m1));
    assert_eq!(g["truncated"], json!(false));
    let nodes = g["nodes"].as_array().unwrap();
    let member_nodes: Vec<u64> = nodes
        .iter()
        .filter(|n| n["kind"] == "member")
        .map(|n| n["member_id"].as_u64().unwrap())
        .collect();
    assert_eq!(member_nodes, vec![m2, m1, m3], "nearest first: {g}");
    assert!(!member_nodes.contains(&m4));
    let two = nodes.iter().find(|n| n["member_id"] == json!(m2)).unwrap();
    assert_eq!(two["id"], json!(format!("member:{m2}")));
    assert_eq!(
        (two["profile_id"].as_u64(), two["display_name"].as_str()),
        (Some(m1), Some("Two"))
    );
    let mut key_nodes: Vec<&str> = nodes
        .iter()
        .filter(|n| n["kind"] == "key")
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    key_nodes.sort();
    assert_eq!(
        key_nodes,
        vec![
            "key:custom_id:C1",
            "key:custom_id:C2",
            "key:display_email:a@x.com"
        ]
    );
    let email = "key:display_email:a@x.com".to_owned();
    let (n1, n2, n3) = (
        format!("member:{m1}"),
        format!("member:{m2}"),
        format!("member:{m3}"),
    );
    let mut expected = vec![
        (n1.clone(), "key:custom_id:C1".to_owned()),
        (n1, email.clone()),
        (n2, email.clone()),
        (n3.clone(), "key:custom_id:C2".to_owned()),
    ];
    expected.sort();
    assert_eq!(pairs(&g["edges"]), expected);
    assert_eq!(pairs(&g["refused"]), vec![(n3, email)]);
    assert_eq!(g["refused"][0]["reason"], json!("distinct_conflict"));

    // Bounded: the nearest members, and it says so.
    let (status, small) = s
        .get(
            &t.path(&format!("/chat/members/{m2}/unify-profile/graph?limit=2")),
            &t.admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{small}");
    assert_eq!(small["truncated"], json!(true));
    let shown = small["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "member")
        .count();
    assert_eq!(shown, 2);
    assert!(small["refused"].as_array().unwrap().is_empty());

    // A member alone is a graph of itself and its key node.
    let (_, alone) = s
        .get(
            &t.path(&format!("/chat/members/{m4}/unify-profile/graph")),
            &t.admin,
        )
        .await;
    assert_eq!(alone["nodes"].as_array().unwrap().len(), 2, "{alone}");
    assert_eq!(pairs(&alone["edges"]).len(), 1);
}

#[tokio::test]
async fn the_graph_refuses_bad_input_and_other_accounts_members() {
    let s = Server::start().await;
    let t = s.tenant("acme").await;
    let other = s.tenant("other").await;
    let [m1, ..] = distinct_scope(&s, &t).await;
    let graph = |org: &Tenant, id: u64, query: &str| {
        org.path(&format!("/chat/members/{id}/unify-profile/graph{query}"))
    };
    for query in ["?limit=0", "?limit=1001", "?limit=x", "?depth=2"] {
        let (status, body) = s.get(&graph(&t, m1, query), &t.admin).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(code(&body), "INVALID_ARGUMENT", "{query}: {body}");
    }
    let (status, body) = s
        .get(&t.path("/chat/members/abc/unify-profile/graph"), &t.admin)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Another account: its admin, through its own org or ours, sees no such member.
    let (status, body) = s.get(&graph(&t, m1, ""), &other.admin).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (status, body) = s.get(&graph(&other, m1, ""), &other.admin).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{body}"
    );
    let (status, _) = s.get(&graph(&t, 999_999, ""), &t.admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.get(&graph(&t, m1, ""), "not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_openapi_document_lists_the_graph_and_the_key_value_lookup() {
    let s = Server::start().await;
    let (status, doc) = s.get("/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    let graph = &doc["paths"]["/api/v1/orgs/{org_id}/chat/members/{member_id}/unify-profile/graph"];
    assert!(graph["get"].is_object(), "no graph path");
    let params: Vec<&str> = doc["paths"]["/api/v1/orgs/{org_id}/chat/members"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        params.contains(&"attribute") && params.contains(&"value"),
        "{params:?}"
    );
    let schemas = &doc["components"]["schemas"];
    for name in ["GraphView", "GraphNodeView", "GraphEdge", "GraphRefused"] {
        assert!(schemas[name].is_object(), "{name} missing");
    }
}
