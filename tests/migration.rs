//! A store written by the last schema-version-1 build (`tests/fixtures/v1-store.tar.gz`, made by
//! `tests/fixtures/make-v1-store.py`) opens under the current schema: it is migrated once, and
//! every member, profile and scope setting reads back exactly as the old build served them.

mod common;

use std::process::Command;

use common::Server;
use serde_json::Value;
use unify::config::Config;

/// Extracts the fixture into a fresh directory and returns it (its `data` child is the data dir).
fn extract_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/v1-store.tar.gz"
    );
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(fixture)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "tar failed");
    dir
}

fn expected() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/v1-store.expected.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every member of an org, page by page, as the list endpoint gives them.
async fn list_all(server: &Server, token: &str, org: &str) -> Vec<Value> {
    let mut members = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let query = match after {
            Some(a) => format!("?limit=25&after={a}"),
            None => "?limit=25".to_owned(),
        };
        let (status, page) = server
            .get(&format!("/api/v1/orgs/{org}/chat/members{query}"), token)
            .await;
        assert_eq!(status, 200, "{page}");
        let batch = page["members"].as_array().unwrap().clone();
        let done = batch.is_empty() || page["next_after"].is_null();
        members.extend(batch);
        if done {
            return members;
        }
        after = page["next_after"].as_u64();
    }
}

#[tokio::test]
async fn a_version_1_store_is_migrated_and_reads_as_before() {
    let dir = extract_fixture();
    let data_dir = dir.path().join("data");
    let expected = expected();
    for round in 0..2 {
        // The second start opens the migrated store: nothing is migrated twice.
        let mut config = Config {
            data_dir: data_dir.clone(),
            ..Config::default()
        };
        config.auth.jwt_secret = Some(common::SECRET.to_owned());
        let server = Server::start_in(config).await;
        for account in expected["accounts"].as_array().unwrap() {
            let root = server.admin(account["account"]["id"].as_u64().unwrap());
            for (org, want) in account["orgs"].as_object().unwrap() {
                let base = format!("/api/v1/orgs/{org}");
                let (_, setting) = server
                    .get(&format!("{base}/organization/unify-scope-setting"), &root)
                    .await;
                assert_eq!(setting, want["setting"], "round {round}, org {org}");
                let mut members = list_all(&server, &root, org).await;
                members.retain(|m| {
                    !m["external_member_id"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("after-"))
                });
                assert_eq!(&Value::from(members.clone()), &want["members"], "org {org}");
                for member in &members {
                    // Members created by the earlier round are not in the old build's answers.
                    if member["external_member_id"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("after-"))
                    {
                        continue;
                    }
                    let id = member["id"].as_u64().unwrap();
                    for view in ["unification", "unify-profile"] {
                        let (status, got) = server
                            .get(&format!("{base}/chat/members/{id}/{view}"), &root)
                            .await;
                        assert_eq!(status, 200, "{got}");
                        let key = view.replace('-', "_");
                        assert_eq!(got, want[&key][id.to_string()], "{view} of member {id}");
                    }
                }
            }
        }
        // Writes work on the migrated store.
        let (status, created) = server
            .post(
                "/api/v1/orgs/3/chat/members",
                &server.admin(2),
                serde_json::json!({"channel_id": 3, "external_member_id": format!("after-{round}")}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        server.stop().await;
    }
    common::assert_verifies(&data_dir);
}
