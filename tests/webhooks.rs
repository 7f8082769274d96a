//! Channel webhooks and auto-provisioning (SPEC 6) against the real server, with a local HTTP
//! server standing in for the channels' contact API.
//!
//! Provisioning is asynchronous, so the tests never sleep: the events of one sender are
//! provisioned in arrival order, so a test sends a last "sentinel" event from the same sender
//! whose effect is visible (a new email, a later `last_message_at`) and polls for it; once
//! it shows, every earlier event of that sender has been handled.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use common::{Server, Tenant, eventually, sign_webhook};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CONTACT_TOKEN: &str = "contact-token";

// ---------------------------------------------------------------------------------------------
// The contact-API stand-in.

/// How the stand-in answers; changed by the tests while it runs.
#[derive(Default)]
struct Contacts {
    /// `GET /tenant` answers this key, or 500 when `None`.
    tenant: Mutex<Option<String>>,
    /// Delay before `GET /users/{id}` answers.
    delay: Mutex<Duration>,
    /// `GET /users/{id}` answers 500 when set.
    fail: Mutex<bool>,
    /// Profiles by identity; unknown identities get `{name: id}`.
    profiles: Mutex<HashMap<String, Value>>,
    /// Identities `GET /users/{id}` answers 404 for.
    missing: Mutex<std::collections::HashSet<String>>,
    user_calls: AtomicUsize,
    /// `GET /users/{id}` requests received, by identity.
    calls_by_id: Mutex<HashMap<String, usize>>,
}

async fn tenant_route(
    State(c): State<Arc<Contacts>>,
    headers: HeaderMap,
) -> axum::response::Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match c.tenant.lock().unwrap().clone() {
        Some(key) => axum::Json(json!({ "tenant_key": key })).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn user_route(
    State(c): State<Arc<Contacts>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    c.user_calls.fetch_add(1, Ordering::SeqCst);
    *c.calls_by_id.lock().unwrap().entry(id.clone()).or_default() += 1;
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let delay = *c.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if *c.fail.lock().unwrap() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if c.missing.lock().unwrap().contains(&id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let profile = c.profiles.lock().unwrap().get(&id).cloned();
    axum::Json(profile.unwrap_or_else(|| json!({ "name": id }))).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {CONTACT_TOKEN}"))
}

/// Starts the stand-in on `127.0.0.1:0`; returns its state and base URL.
async fn contact_api() -> (Arc<Contacts>, String) {
    let contacts = Arc::new(Contacts::default());
    *contacts.tenant.lock().unwrap() = Some("t-1".into());
    let app = axum::Router::new()
        .route("/v1/tenant", axum::routing::get(tenant_route))
        .route("/v1/users/{id}", axum::routing::get(user_route))
        .with_state(contacts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (contacts, url)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A channel with its webhook secret.
struct Hook {
    org_id: u64,
    channel_id: u64,
    secret: String,
}

impl Hook {
    fn url(&self, server: &Server) -> String {
        format!(
            "{}/api/v1/orgs/{}/channels/{}/events",
            server.base, self.org_id, self.channel_id
        )
    }

    /// Posts `body` signed with the channel's secret.
    async fn send(&self, server: &Server, body: &Value) -> (StatusCode, Value) {
        let (status, _, answer) = self.send_full(server, body).await;
        (status, answer)
    }

    async fn send_raw(
        &self,
        server: &Server,
        raw: Vec<u8>,
        signature: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.deliver(server, raw, signature).await;
        (status, body)
    }

    /// Posts `body` signed with the channel's secret; returns the status, the `Retry-After`
    /// header and the answer.
    async fn send_full(
        &self,
        server: &Server,
        body: &Value,
    ) -> (StatusCode, Option<String>, Value) {
        let raw = body.to_string();
        let signature = sign_webhook(&self.secret, raw.as_bytes());
        self.deliver(server, raw.into_bytes(), Some(&signature))
            .await
    }

    async fn deliver(
        &self,
        server: &Server,
        raw: Vec<u8>,
        signature: Option<&str>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = server
            .client
            .post(self.url(server))
            .header("content-type", "application/json")
            .body(raw);
        if let Some(signature) = signature {
            request = request.header("x-unify-signature", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (
            status,
            retry_after,
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

/// Creates a channel of the tenant's org; returns the status and the answer.
async fn create_channel(server: &Server, tenant: &Tenant, body: Value) -> (StatusCode, Value) {
    server
        .post(&tenant.path("/channels"), &tenant.admin, body)
        .await
}

/// Creates an auto-provisioning channel with tenant key `t-1` (and `extra` settings).
async fn hook(server: &Server, tenant: &Tenant, extra: Value) -> Hook {
    let mut body =
        json!({"name": "Feishu", "type": "feishu", "tenant_key": "t-1", "auto_provision": true});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, channel) = create_channel(server, tenant, body).await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    Hook {
        org_id: tenant.org_id,
        channel_id: channel["id"].as_u64().unwrap(),
        secret: channel["webhook_secret"].as_str().unwrap().to_owned(),
    }
}

/// Starts a contact API and creates an auto-provisioning channel that asks it; returns both.
async fn contact_hook(server: &Server, tenant: &Tenant) -> (Arc<Contacts>, Hook) {
    let (contacts, url) = contact_api().await;
    let hook = hook(
        server,
        tenant,
        json!({"contact_api": {"url": url, "token": CONTACT_TOKEN}}),
    )
    .await;
    (contacts, hook)
}

/// A message event from `sender` (its `union_id`).
fn message(event_id: &str, sender: &str) -> Value {
    json!({
        "event_id": event_id, "type": "message", "tenant_key": "t-1",
        "sender": {"external_member_id": format!("ext-{sender}"), "union_id": sender, "name": "Kevin"},
        "text": "hello", "sent_at": "2026-01-31T12:25:27Z"
    })
}

/// The same message carrying a profile email.
fn with_email(mut event: Value, email: &str) -> Value {
    event["profile"] = json!({ "display_email": email, "display_mobile": null });
    event
}

/// Returns the channel's members with identity `ext`.
async fn members_with(server: &Server, tenant: &Tenant, hook: &Hook, ext: &str) -> Vec<Value> {
    let path = tenant.path(&format!(
        "/chat/members?channel_id={}&external_member_id={ext}",
        hook.channel_id
    ));
    let (status, page) = server.get(&path, &tenant.admin).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["members"].as_array().unwrap().clone()
}

/// Returns every member of the channel.
async fn channel_members(server: &Server, tenant: &Tenant, hook: &Hook) -> Vec<Value> {
    let path = tenant.path(&format!(
        "/chat/members?channel_id={}&limit=1000",
        hook.channel_id
    ));
    let (status, page) = server.get(&path, &tenant.admin).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["members"].as_array().unwrap().clone()
}

/// Waits until the member with identity `ext` satisfies `condition`; returns it.
async fn member_where(
    server: &Server,
    tenant: &Tenant,
    hook: &Hook,
    ext: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let found = Mutex::new(None);
    let held = eventually(|| async {
        let members = members_with(server, tenant, hook, ext).await;
        match members.first() {
            Some(m) if condition(m) => {
                *found.lock().unwrap() = Some(m.clone());
                true
            }
            _ => false,
        }
    })
    .await;
    assert!(held, "member {ext} never reached the expected state");
    found.into_inner().unwrap().unwrap()
}

/// Sends a sentinel message from `sender` carrying `email` and waits until it shows: every
/// earlier event of the sender has then been provisioned.
async fn drain(server: &Server, tenant: &Tenant, hook: &Hook, sender: &str, email: &str) -> Value {
    let sentinel = with_email(
        message(&format!("sentinel-{sender}-{email}"), sender),
        email,
    );
    let (status, body) = hook.send(server, &sentinel).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    member_where(server, tenant, hook, sender, |m| {
        m["display_email"] == email
    })
    .await
}

async fn set_keys(server: &Server, tenant: &Tenant, attributes: &[&str]) {
    let keys: Vec<Value> = attributes
        .iter()
        .map(|a| json!({"attribute": a, "is_distinct": false}))
        .collect();
    let (status, body) = server
        .post(
            &tenant.path("/organization/unify-scope-setting"),
            &tenant.admin,
            json!({ "unify_keys": keys }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

// ---------------------------------------------------------------------------------------------
// The synchronous checks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_required_and_checked_against_the_raw_body() {
    let server = Server::start().await;
    let tenant = server.tenant("sig").await;
    let hook = hook(&server, &tenant, json!({})).await;
    let raw = message("evt-sig", "on_sig").to_string().into_bytes();
    let wrong = sign_webhook("not-the-secret", &raw);
    let tampered = sign_webhook(&hook.secret, b"{}");
    for signature in [
        None,
        Some(wrong.as_str()),
        Some(tampered.as_str()),
        Some("sha256=zz"),
    ] {
        let (status, body) = hook.send_raw(&server, raw.clone(), signature).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "INVALID_SIGNATURE");
    }
    // Nothing was recorded: the same event id, correctly signed, is accepted (not duplicate).
    let (status, body) = hook.send(&server, &message("evt-sig", "on_sig")).await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"status": "accepted"}))
    );
    // Unknown channels and channels of another org are 404, whatever the signature.
    let other = server.tenant("sig-other").await;
    for (org, channel) in [(hook.org_id, 999_999), (other.org_id, hook.channel_id)] {
        let wrong_place = Hook {
            org_id: org,
            channel_id: channel,
            secret: hook.secret.clone(),
        };
        let (status, body) = wrong_place
            .send(&server, &message("evt-404", "on_sig"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_with_a_clear_code_and_write_nothing() {
    let server = Server::start().await;
    let tenant = server.tenant("shape").await;
    let hook = hook(&server, &tenant, json!({})).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"event_id\": ".to_vec(), "MALFORMED_JSON"),
        (vec![0xff, 0xfe], "MALFORMED_JSON"),
        (
            br#"{"event_id": "e1", "type": "message", "sender": {"union_id": "u"}, "extra": 1}"#.to_vec(),
            "INVALID_ARGUMENT",
        ),
        (
            br#"{"event_id": "e1", "type": "poke", "sender": {"union_id": "u"}}"#.to_vec(),
            "INVALID_ARGUMENT",
        ),
        (br#"{"event_id": "e1", "type": "message"}"#.to_vec(), "INVALID_ARGUMENT"),
        (
            br#"{"event_id": 7, "type": "message", "sender": {"union_id": "u"}}"#.to_vec(),
            "INVALID_ARGUMENT",
        ),
        (
            br#"{"event_id": "e1", "type": "message", "sender": {"union_id": "u"}, "sent_at": "noon"}"#.to_vec(),
            "INVALID_ARGUMENT",
        ),
    ];
    for (raw, code) in cases {
        let signature = sign_webhook(&hook.secret, &raw);
        let (status, body) = hook.send_raw(&server, raw.clone(), Some(&signature)).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}: {body}",
            String::from_utf8_lossy(&raw)
        );
        assert_eq!(
            body["error"]["code"],
            code,
            "{}",
            String::from_utf8_lossy(&raw)
        );
    }
    // Empty identities: 400 EMPTY_EXTERNAL_ID, and nothing written (the id stays fresh).
    for sender in [
        json!({}),
        json!({"union_id": "", "external_member_id": "  "}),
    ] {
        let mut event = message("e1", "x");
        event["sender"] = sender;
        let (status, body) = hook.send(&server, &event).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "EMPTY_EXTERNAL_ID");
    }
    // A non-JSON content type is 415.
    let raw = message("e1", "on_u").to_string().into_bytes();
    let response = server
        .client
        .post(hook.url(&server))
        .header("content-type", "text/plain")
        .header("x-unify-signature", sign_webhook(&hook.secret, &raw))
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A body over 1 MiB is 413.
    let mut big = message("e-big", "on_u");
    big["text"] = json!("x".repeat(1024 * 1024 + 1));
    let (status, _) = hook.send(&server, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing of the refused requests was written: e1 is accepted now, and no member came
    // from the refused ones.
    let (status, _) = hook.send(&server, &message("e1", "on_u")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    drain(&server, &tenant, &hook, "on_u", "u@example.com").await;
    let members = channel_members(&server, &tenant, &hook).await;
    assert_eq!(members.len(), 1, "{members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_tenant_is_403_and_writes_nothing() {
    let server = Server::start().await;
    let tenant = server.tenant("tenant").await;
    let hook = hook(&server, &tenant, json!({})).await;
    let metrics_before = metric(&server, "unify_webhook_tenant_mismatch_total").await;
    for tenant_key in [json!("t-2"), json!(null)] {
        let mut event = message("evt-guest", "on_guest");
        event["tenant_key"] = tenant_key;
        let (status, body) = hook.send(&server, &event).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "TENANT_MISMATCH");
    }
    assert!(metric(&server, "unify_webhook_tenant_mismatch_total").await >= metrics_before + 2.0);
    // Another sender's sentinel is provisioned; the guest never was.
    drain(&server, &tenant, &hook, "on_member", "m@example.com").await;
    assert!(
        members_with(&server, &tenant, &hook, "on_guest")
            .await
            .is_empty()
    );
    // The refused event id was not recorded: with the right tenant it is accepted.
    let (status, _) = hook.send(&server, &message("evt-guest", "on_guest")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

// ---------------------------------------------------------------------------------------------
// Provisioning.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_events_of_one_sender_create_one_member() {
    let server = Server::start().await;
    let tenant = server.tenant("fifty").await;
    let hook = Arc::new(hook(&server, &tenant, json!({})).await);
    let server = Arc::new(server);
    let sends = (0..50).map(|i| {
        let (server, hook) = (server.clone(), hook.clone());
        tokio::spawn(async move {
            let event = with_email(
                message(&format!("evt-{i}"), "on_kevin"),
                "kevin@example.com",
            );
            hook.send(&server, &event).await
        })
    });
    for send in futures_util::future::join_all(sends).await {
        let (status, body) = send.unwrap();
        assert_eq!(
            (status, body),
            (StatusCode::ACCEPTED, json!({"status": "accepted"}))
        );
    }
    let member = drain(&server, &tenant, &hook, "on_kevin", "kevin2@example.com").await;
    let members = channel_members(&server, &tenant, &hook).await;
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(
        member["external_member_id"], "on_kevin",
        "union_id is the identity"
    );
    assert_eq!(member["username"], "kevin", "named at creation, kept after");
    assert_eq!(member["original_name"], "Kevin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_id_is_provisioned_once() {
    let server = Arc::new(Server::start().await);
    let tenant = server.tenant("dup").await;
    let hook = Arc::new(hook(&server, &tenant, json!({})).await);
    let event = Arc::new(with_email(message("evt-once", "on_dup"), "dup@example.com"));
    let sends = (0..20).map(|_| {
        let (server, hook, event) = (server.clone(), hook.clone(), event.clone());
        tokio::spawn(async move { hook.send(&server, &event).await })
    });
    let mut statuses = Vec::new();
    for send in futures_util::future::join_all(sends).await {
        let (status, body) = send.unwrap();
        let expected = if status == StatusCode::ACCEPTED {
            "accepted"
        } else {
            "duplicate"
        };
        assert_eq!(body, json!({ "status": expected }), "{status}");
        statuses.push(status);
    }
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let duplicates = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!((accepted, duplicates), (1, 19));
    // Later deliveries stay duplicates, also with another body.
    let (status, body) = hook.send(&server, &message("evt-once", "on_other")).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "duplicate"}))
    );
    // The same event id on another channel is a different event.
    let second = self::hook(&server, &tenant, json!({"name": "Second"})).await;
    let (status, _) = second.send(&server, &message("evt-once", "on_dup")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    drain(&server, &tenant, &hook, "on_dup", "dup2@example.com").await;
    drain(&server, &tenant, &hook, "on_other", "other@example.com").await;
    assert_eq!(channel_members(&server, &tenant, &hook).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usernames_collide_into_numbered_ones_unique_per_org() {
    let server = Arc::new(Server::start().await);
    let tenant = server.tenant("names").await;
    let hook = Arc::new(hook(&server, &tenant, json!({})).await);
    let senders = [
        ("on_a", "Kevin@a.com"),
        ("on_b", "kevin@b.com"),
        ("on_c", "KEVIN@c.com"),
        ("ou_abcdefgh1", ""),
        ("ou_abcdefgh2", ""),
    ];
    let sends = senders.iter().map(|(sender, email)| {
        let (server, hook) = (server.clone(), hook.clone());
        let mut event = message(&format!("evt-{sender}"), sender);
        if !email.is_empty() {
            event = with_email(event, email);
        }
        tokio::spawn(async move { hook.send(&server, &event).await.0 })
    });
    for status in futures_util::future::join_all(sends).await {
        assert_eq!(status.unwrap(), StatusCode::ACCEPTED);
    }
    let mut names = HashSet::new();
    for (sender, _) in senders {
        let member = member_where(&server, &tenant, &hook, sender, |m| {
            m["username"].is_string()
        })
        .await;
        names.insert(member["username"].as_str().unwrap().to_owned());
    }
    let expected: HashSet<String> = [
        "kevin",
        "kevin-2",
        "kevin-3",
        "feishu-ou_abcde",
        "feishu-ou_abcde-2",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manually_unified_member_is_never_relinked_by_later_events() {
    let server = Server::start().await;
    let tenant = server.tenant("manual").await;
    set_keys(&server, &tenant, &["display_email"]).await;
    let hook = hook(&server, &tenant, json!({})).await;
    // An operator-created member with the email; the sender's event links to it.
    let (status, anchor) = server
        .post(
            &tenant.path("/chat/members"),
            &tenant.admin,
            json!({"channel_id": tenant.channel_id, "external_member_id": "U-anchor", "display_email": "kevin@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{anchor}");
    let (status, _) = hook
        .send(
            &server,
            &with_email(message("evt-1", "on_kevin"), "kevin@example.com"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let member = member_where(&server, &tenant, &hook, "on_kevin", |m| {
        m["profile_id"] == anchor["id"]
    })
    .await;
    let id = member["id"].as_u64().unwrap();
    // The operator cancels the unification: the member is alone and locked.
    let (status, cancelled) = server
        .post(
            &tenant.path(&format!("/chat/members/{id}/cancel-unification")),
            &tenant.admin,
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["profile_id"], id);
    // Later events carry the linking email again; the last one has a later timestamp, which
    // is written (activity is not a unify key) and shows that all of them were handled.
    for (i, sent_at) in ["2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z"]
        .iter()
        .enumerate()
    {
        let mut event = with_email(
            message(&format!("evt-later-{i}"), "on_kevin"),
            "kevin@example.com",
        );
        event["sent_at"] = json!(sent_at);
        let (status, _) = hook.send(&server, &event).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let after = member_where(&server, &tenant, &hook, "on_kevin", |m| {
        m["last_message_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-02-02"))
    })
    .await;
    assert_eq!(after["profile_id"], id, "{after}");
    assert_eq!(after["display_email"], Value::Null);
    assert_eq!(after["manual_unification"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_the_contact_api_does_not_know_do_not_open_its_breaker() {
    let server = Server::start().await;
    let tenant = server.tenant("unknown").await;
    let (contacts, hook) = contact_hook(&server, &tenant).await;
    // More unknown senders in a row than the breaker's threshold (5): each answered 404.
    for i in 0..8 {
        let sender = format!("on_nobody_{i}");
        contacts.missing.lock().unwrap().insert(sender.clone());
        let (status, _) = hook
            .send(&server, &message(&format!("evt-nobody-{i}"), &sender))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let member = member_where(&server, &tenant, &hook, &sender, |_| true).await;
        assert_eq!(member["display_email"], Value::Null, "{member}");
    }
    // The API itself is fine: a sender it knows still gets its profile.
    contacts.profiles.lock().unwrap().insert(
        "on_known".into(),
        json!({"name": "Known", "display_email": "known@example.com"}),
    );
    let (status, _) = hook.send(&server, &message("evt-known", "on_known")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let known = member_where(&server, &tenant, &hook, "on_known", |_| true).await;
    assert_eq!(known["display_email"], "known@example.com", "{known}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_profiles_are_fetched_once_and_failures_provision_without_profile() {
    let server = Server::start().await;
    let tenant = server.tenant("contacts").await;
    let (contacts, hook) = contact_hook(&server, &tenant).await;
    contacts.profiles.lock().unwrap().insert(
        "on_ann".into(),
        json!({"name": "Ann", "display_email": "Ann.Lee@example.com", "display_mobile": "0912345678", "extra": 1}),
    );
    for i in 0..3 {
        let (status, _) = hook
            .send(&server, &message(&format!("evt-ann-{i}"), "on_ann"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let ann = drain(&server, &tenant, &hook, "on_ann", "ann@example.com").await;
    assert_eq!(ann["username"], "ann.lee");
    assert_eq!(ann["display_mobile"], "0912345678");
    assert_eq!(ann["display_name"], "Ann");
    assert_eq!(
        contacts.user_calls.load(Ordering::SeqCst),
        1,
        "cached for the identity"
    );
    // A contact API answering 500: the member is provisioned without profile.
    *contacts.fail.lock().unwrap() = true;
    let (status, _) = hook
        .send(&server, &message("evt-bob", "on_bob1234567"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let bob = member_where(&server, &tenant, &hook, "on_bob1234567", |_| true).await;
    assert_eq!(bob["display_email"], Value::Null);
    assert_eq!(bob["username"], "feishu-on_bob12");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_contact_api_never_delays_the_webhook() {
    let server = Arc::new(Server::start().await);
    let tenant = server.tenant("slow").await;
    let (contacts, hook) = contact_hook(&server, &tenant).await;
    *contacts.delay.lock().unwrap() = Duration::from_secs(30);
    let hook = Arc::new(hook);
    // 200 first events of distinct senders, 8 at a time: each would wait on the contact API.
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let workers = (0..8).map(|w| {
        let (server, hook, latencies) = (server.clone(), hook.clone(), latencies.clone());
        tokio::spawn(async move {
            for i in (w..200).step_by(8) {
                let event = message(&format!("evt-{i}"), &format!("on_slow_{i}"));
                let started = Instant::now();
                let (status, _) = hook.send(&server, &event).await;
                latencies.lock().unwrap().push(started.elapsed());
                assert_eq!(status, StatusCode::ACCEPTED);
            }
        })
    });
    for worker in futures_util::future::join_all(workers).await {
        worker.unwrap();
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "webhook latency with a hanging contact API: p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies.last().unwrap()
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    // The fetches time out after 5 s and the senders are provisioned without profile.
    let member = member_where(&server, &tenant, &hook, "on_slow_0", |_| true).await;
    assert_eq!(member["display_email"], Value::Null);
    assert_eq!(member["display_name"], "Kevin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_sender_behind_a_hanging_contact_api_starves_no_other_sender() {
    let server = Arc::new(Server::start().await);
    let tenant = server.tenant("flood").await;
    let (contacts, hook) = contact_hook(&server, &tenant).await;
    // Far beyond the fetch timeout: every fetch fails by timing out.
    *contacts.delay.lock().unwrap() = Duration::from_secs(3600);
    let hook = Arc::new(hook);
    // One sender floods the channel, 8 deliveries at a time, until it is refused.
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = (0..8).map(|w| {
        let (server, hook) = (server.clone(), hook.clone());
        let (accepted, refused) = (accepted.clone(), refused.clone());
        tokio::spawn(async move {
            for i in 0.. {
                if refused.load(Ordering::SeqCst) {
                    return;
                }
                assert!(i < 2_000, "the flooding sender was never refused");
                let event = message(&format!("evt-flood-{w}-{i}"), "on_flood");
                let (status, retry_after, body) = hook.send_full(&server, &event).await;
                match status {
                    StatusCode::ACCEPTED => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    StatusCode::TOO_MANY_REQUESTS => {
                        assert_eq!(body["error"]["code"], "OVERLOADED", "{body}");
                        assert!(retry_after.is_some(), "429 without Retry-After");
                        refused.store(true, Ordering::SeqCst);
                    }
                    other => panic!("unexpected {other}: {body}"),
                }
            }
        })
    });
    for worker in futures_util::future::join_all(workers).await {
        worker.unwrap();
    }
    let flooded = accepted.load(Ordering::SeqCst);
    // Twenty new senders of the same channel are still accepted, promptly.
    let senders: Vec<String> = (0..20).map(|i| format!("on_new_{i}")).collect();
    let sends = senders.iter().map(|sender| {
        let (server, hook) = (server.clone(), hook.clone());
        let event = message(&format!("evt-{sender}"), sender);
        tokio::spawn(async move {
            let started = Instant::now();
            let (status, body) = hook.send(&server, &event).await;
            (status, body, started.elapsed())
        })
    });
    for (sender, send) in senders
        .iter()
        .zip(futures_util::future::join_all(sends).await)
    {
        let (status, body, took) = send.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{sender}: {body}");
        assert!(
            took < Duration::from_secs(2),
            "{sender} answered after {took:?}"
        );
    }
    // They are provisioned (without profile) although the contact API never answers.
    for sender in &senders {
        let member = member_where(&server, &tenant, &hook, sender, |_| true).await;
        assert_eq!(member["display_email"], Value::Null);
    }
    // The flooder's events are all provisioned too (a sentinel with its own profile shows
    // last; it is retried while the sender is still at its bound) ...
    let sentinel = with_email(
        message("evt-flood-sentinel", "on_flood"),
        "flood@example.com",
    );
    let in_time =
        eventually(|| async { hook.send(&server, &sentinel).await.0 == StatusCode::ACCEPTED })
            .await;
    assert!(in_time, "the flooding sender's sentinel was never accepted");
    member_where(&server, &tenant, &hook, "on_flood", |m| {
        m["display_email"] == "flood@example.com"
    })
    .await;
    // ... and the hanging contact API was asked about the flooder far fewer times than it
    // sent events: its queued events shared one failed fetch.
    let asked = contacts
        .calls_by_id
        .lock()
        .unwrap()
        .get("on_flood")
        .copied()
        .unwrap_or(0);
    println!(
        "flooding sender: {flooded} events accepted before 429, contact api asked {asked} times"
    );
    assert!(
        asked <= 2 && asked * 10 < flooded,
        "asked {asked} times for {flooded} events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_codes_join_the_sender_once() {
    let server = Server::start().await;
    let tenant = server.tenant("link").await;
    set_keys(&server, &tenant, &["display_mobile", "display_email"]).await;
    let hook = hook(&server, &tenant, json!({})).await;
    let (status, target) = server
        .post(
            &tenant.path("/chat/members"),
            &tenant.admin,
            json!({"channel_id": tenant.channel_id, "external_member_id": "U-target",
                   "display_email": "t@example.com", "display_mobile": "0912345678"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{target}");
    let target_id = target["id"].as_u64().unwrap();
    let codes = tenant.path(&format!("/chat/members/{target_id}/link-codes"));
    let (status, code) = server.post(&codes, &tenant.admin, Value::Null).await;
    assert_eq!(status, StatusCode::CREATED, "{code}");
    let text = code["code"].as_str().unwrap().to_owned();
    assert!(code["expires_at"].is_string());
    // A `/link CODE` message joins the sender (created for it) by manual unification onto
    // the target's highest-priority key value.
    let mut event = message("evt-link", "on_linker");
    event["text"] = json!(format!("/link {}", text.to_lowercase()));
    let (status, _) = hook.send(&server, &event).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let linker = member_where(&server, &tenant, &hook, "on_linker", |m| {
        m["profile_id"] == target_id
    })
    .await;
    assert_eq!(linker["manual_unification"], true);
    assert_eq!(linker["display_mobile"], "0912345678");
    // The code is used up: a `link` event of another sender does nothing to it.
    let mut again = message("evt-link-2", "on_late");
    again["type"] = json!("link");
    again["text"] = json!(text);
    let (status, _) = hook.send(&server, &again).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let late = drain(&server, &tenant, &hook, "on_late", "late@example.com").await;
    assert_ne!(late["profile_id"], target_id);
    assert_eq!(late["manual_unification"], false);
    // An unknown code does nothing either.
    let mut unknown = message("evt-link-3", "on_late");
    unknown["text"] = json!("/link NOPE2345");
    hook.send(&server, &unknown).await;
    let late = drain(&server, &tenant, &hook, "on_late", "late2@example.com").await;
    assert_ne!(late["profile_id"], target_id);
    // Codes are for members the caller can see.
    let other = server.tenant("link-other").await;
    let (status, _) = server.post(&codes, &other.admin, Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .post(
            &tenant.path("/chat/members/999999/link-codes"),
            &tenant.admin,
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_link_code_attempts_are_limited_per_sender() {
    let server = Server::start().await;
    let tenant = server.tenant("guess").await;
    set_keys(&server, &tenant, &["display_email"]).await;
    let hook = hook(&server, &tenant, json!({})).await;
    let (status, target) = server
        .post(
            &tenant.path("/chat/members"),
            &tenant.admin,
            json!({"channel_id": tenant.channel_id, "external_member_id": "U-target",
                   "display_email": "t@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{target}");
    let target_id = target["id"].as_u64().unwrap();
    let codes = tenant.path(&format!("/chat/members/{target_id}/link-codes"));
    let new_code = || async {
        let (status, code) = server.post(&codes, &tenant.admin, Value::Null).await;
        assert_eq!(status, StatusCode::CREATED, "{code}");
        code["code"].as_str().unwrap().to_owned()
    };
    let code = new_code().await;
    let limited_before = labelled_metric(&server, "unify_link_code_total", "limited").await;
    // Ten wrong codes (as `link` events and `/link` messages), then the right one.
    for i in 0..10 {
        let mut event = message(&format!("evt-guess-{i}"), "on_guess");
        if i % 2 == 0 {
            event["type"] = json!("link");
            event["text"] = json!(format!("WRONG{i:05}"));
        } else {
            event["text"] = json!(format!("/link WRONG{i:05}"));
        }
        let (status, _) = hook.send(&server, &event).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let mut right = message("evt-guess-right", "on_guess");
    right["type"] = json!("link");
    right["text"] = json!(code);
    let (status, _) = hook.send(&server, &right).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "refused later, in provisioning"
    );
    // Once a later message of the sender shows, every earlier event was handled: the right
    // code was refused, the sender did not join the target's profile.
    let guesser = active_on(&server, &tenant, &hook, "on_guess", "2026-03-01").await;
    assert_ne!(guesser["profile_id"], target_id, "{guesser}");
    assert_eq!(guesser["manual_unification"], false);
    assert!(
        labelled_metric(&server, "unify_link_code_total", "limited").await >= limited_before + 1.0
    );
    // The code was not used up by the refusal, and another sender is not limited: it redeems
    // a fresh code.
    let fresh = new_code().await;
    let mut other = message("evt-other-link", "on_honest");
    other["type"] = json!("link");
    other["text"] = json!(fresh);
    let (status, _) = hook.send(&server, &other).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let honest = member_where(&server, &tenant, &hook, "on_honest", |m| {
        m["profile_id"] == target_id
    })
    .await;
    assert_eq!(honest["manual_unification"], true);
}

// ---------------------------------------------------------------------------------------------
// Channel settings.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_provisioning_channels_need_a_tenant_key_or_detect_it() {
    let server = Server::start().await;
    let tenant = server.tenant("settings").await;
    let (contacts, url) = contact_api().await;
    let api = json!({"url": url, "token": CONTACT_TOKEN});
    let refused = [
        json!({"name": "A", "type": "line", "auto_provision": true}),
        json!({"name": "A", "type": "line", "contact_api": {"url": "ftp://x.example.com", "token": "t"}}),
        json!({"name": "A", "type": "line", "contact_api": {"url": "not a url", "token": "t"}}),
        json!({"name": "A", "type": "line", "contact_api": {"url": url, "token": ""}}),
        json!({"name": "A", "type": "line", "tenant_key": " "}),
    ];
    for body in refused {
        let (status, answer) = create_channel(&server, &tenant, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "INVALID_ARGUMENT");
    }
    // Detected from the contact API when saved.
    let (status, channel) = create_channel(
        &server,
        &tenant,
        json!({"name": "B", "type": "line", "auto_provision": true, "contact_api": api}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    assert_eq!(channel["tenant_key"], "t-1");
    assert_eq!(
        channel["contact_api"],
        json!({"url": url}),
        "the token is never shown"
    );
    // Detection failing: refused, nothing saved.
    *contacts.tenant.lock().unwrap() = None;
    let (status, _) = create_channel(
        &server,
        &tenant,
        json!({"name": "C", "type": "line", "auto_provision": true, "contact_api": api}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, channels) = server.get(&tenant.path("/channels"), &tenant.admin).await;
    assert_eq!(channels.as_array().unwrap().len(), 2, "{channels}");
    // PATCH: turning auto_provision on without a tenant key is refused and changes nothing.
    let plain = tenant.path(&format!("/channels/{}", tenant.channel_id));
    let patch = |body: Value| server.call(reqwest::Method::PATCH, &plain, &tenant.admin, body);
    let (status, _) = patch(json!({"auto_provision": true})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = patch(json!({"auto_provision": true, "contact_api": api})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "detection still fails");
    let (_, unchanged) = server.get(&plain, &tenant.admin).await;
    assert_eq!(
        (&unchanged["auto_provision"], &unchanged["contact_api"]),
        (&json!(false), &Value::Null)
    );
    *contacts.tenant.lock().unwrap() = Some("t-7".into());
    let (status, patched) = patch(json!({"auto_provision": true, "contact_api": api})).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["tenant_key"], "t-7");
    let (status, _) = patch(json!({"tenant_key": null})).await;
    assert_eq!(status, StatusCode::OK, "detected again");
    let (status, _) = patch(json!({"contact_api": {"url": "file:///etc", "token": "t"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_without_auto_provision_accept_events_but_create_nobody() {
    let server = Server::start().await;
    let tenant = server.tenant("off").await;
    let (status, channel) = create_channel(
        &server,
        &tenant,
        json!({"name": "Off", "type": "line", "tenant_key": "t-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let hook = Hook {
        org_id: tenant.org_id,
        channel_id: channel["id"].as_u64().unwrap(),
        secret: channel["webhook_secret"].as_str().unwrap().to_owned(),
    };
    let (status, _) = hook.send(&server, &message("evt-off", "on_off")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = hook.send(&server, &message("evt-off", "on_off")).await;
    assert_eq!(status, StatusCode::OK, "deduplicated all the same");
    // Turning it on provisions later events of the sender (its first one stays skipped).
    let path = tenant.path(&format!("/channels/{}", hook.channel_id));
    let (status, _) = server
        .call(
            reqwest::Method::PATCH,
            &path,
            &tenant.admin,
            json!({"auto_provision": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    drain(&server, &tenant, &hook, "on_off", "off@example.com").await;
    assert_eq!(channel_members(&server, &tenant, &hook).await.len(), 1);
}

/// Returns the sum of a counter over its labels from `GET /metrics`.
async fn metric(server: &Server, name: &str) -> f64 {
    server
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends a message from `sender` dated `day` and waits until the member's `last_message_at`
/// shows it: every earlier event of the sender has then been handled. Unlike [`drain`] it
/// also works for a manually unified member (whose profile values are never rewritten).
async fn active_on(
    server: &Server,
    tenant: &Tenant,
    hook: &Hook,
    sender: &str,
    day: &str,
) -> Value {
    let mut event = message(&format!("activity-{sender}-{day}"), sender);
    event["sent_at"] = json!(format!("{day}T00:00:00Z"));
    let (status, body) = hook.send(server, &event).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    member_where(server, tenant, hook, sender, |m| {
        m["last_message_at"]
            .as_str()
            .is_some_and(|t| t.starts_with(day))
    })
    .await
}

/// Returns a counter's value for `outcome` from `GET /metrics`.
async fn labelled_metric(server: &Server, name: &str, outcome: &str) -> f64 {
    let label = format!("outcome=\"{outcome}\"");
    server
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
