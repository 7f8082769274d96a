//! The websocket of SPEC 5 against a real server on `127.0.0.1:0`: frames after HTTP changes,
//! `?since=` replay, `resync_required`, `lagged`, pings, refusals before the upgrade, scope
//! changes and shutdown. Clients are real websocket clients (tokio-tungstenite), or a raw TCP
//! client where the test needs one that never reads or never answers pings.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{DEADLINE, SECRET, Server, eventually};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use unify::auth::{Claims, Role};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ws_url(server: &Server, org_id: u64, query: &str) -> String {
    format!("ws://{}/api/v1/orgs/{org_id}/ws{query}", server.addr)
}

/// Sends a JSON request that must succeed; returns the JSON body.
async fn ok(server: &Server, method: Method, path: &str, token: &str, body: Value) -> Value {
    let (status, body) = server.call(method, path, token, body).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Creates an account with a maac org keyed by `display_email`; returns the org and an admin
/// token.
async fn keyed_org(server: &Server) -> (u64, String) {
    let (_, admin) = server.account("acme").await;
    let org = server.org(&admin, "maac", "maac org").await;
    ok(
        server,
        Method::POST,
        &format!("/api/v1/orgs/{org}/organization/unify-scope-setting"),
        &admin,
        json!({ "unify_keys": [{ "attribute": "display_email", "is_distinct": false }] }),
    )
    .await;
    // The key change runs as a job: wait for its last event, so that no test's subscriber
    // sees it arrive late.
    let merge_state = format!("/api/v1/orgs/{org}/organization/unify-scope-setting/merge-state");
    let finished = eventually(|| async {
        let (_, state) = server.get(&merge_state, &admin).await;
        state["is_finished"] == json!(true)
    })
    .await;
    assert!(finished, "the key change finishes");
    (org, admin)
}

async fn create_member(
    server: &Server,
    org: u64,
    token: &str,
    external: &str,
    email: &str,
) -> Value {
    ok(
        server,
        Method::POST,
        &format!("/api/v1/orgs/{org}/chat/members"),
        token,
        json!({ "external_member_id": external, "display_email": email }),
    )
    .await
}

async fn scope_of(server: &Server, org: u64, token: &str) -> u64 {
    let (status, setting) = server
        .get(
            &format!("/api/v1/orgs/{org}/organization/unify-scope-setting"),
            token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{setting}");
    setting["unify_scope_id"].as_u64().unwrap()
}

/// Opens a websocket with the token as `?access_token=`.
async fn subscribe(server: &Server, org: u64, token: &str, since: Option<u64>) -> Ws {
    let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
    let url = ws_url(server, org, &format!("?access_token={token}{since}"));
    let (ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// Returns the next text frame as JSON (answering pings on the way), or panics at the deadline
/// or at a close.
async fn next_frame(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no frame before the deadline")
            .expect("the websocket ended")
            .expect("the websocket failed");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(frame) => panic!("closed by the server: {frame:?}"),
            _ => {}
        }
    }
}

/// Reads frames until one satisfies `wanted`, returning every frame read (it last).
async fn frames_until(ws: &mut Ws, mut wanted: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(ws).await;
        let done = wanted(&frame);
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect()
}

fn is_created(frame: &Value, member_id: u64) -> bool {
    frame["type"] == "profile_updated"
        && frame["reason"] == "member_created"
        && frame["member_ids"]
            .as_array()
            .unwrap()
            .contains(&json!(member_id))
}

fn assert_consecutive(seqs: &[u64], first: u64, last: u64) {
    let expected: Vec<u64> = (first..=last).collect();
    assert_eq!(
        seqs, expected,
        "seqs must run from {first} to {last} without gap or duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_updated_frames_follow_http_changes() {
    let server = Server::start().await;
    let (org, admin) = keyed_org(&server).await;
    let scope = scope_of(&server, org, &admin).await;
    // This one authenticates with the header.
    let mut request = ws_url(&server, org, "").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {admin}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let a = create_member(&server, org, &admin, "a", "a@x.com").await;
    let a_id = a["id"].as_u64().unwrap();
    let frames = frames_until(&mut ws, |f| is_created(f, a_id)).await;
    let created = frames.last().unwrap();
    let mut fields: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "at",
            "member_ids",
            "previous_profile_ids",
            "profile_id",
            "reason",
            "seq",
            "type",
            "unify_scope_id"
        ]
    );
    assert_eq!(created["unify_scope_id"], json!(scope));
    assert_eq!(created["profile_id"], a["profile_id"]);
    assert_eq!(created["member_ids"], json!([a_id]));
    let at = created["at"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok()
            && at.ends_with('Z'),
        "at must be RFC 3339 UTC: {at}"
    );

    // A second member with the same email joins the profile of the first.
    let b = create_member(&server, org, &admin, "b", "a@x.com").await;
    let b_id = b["id"].as_u64().unwrap();
    assert_eq!(b["profile_id"], a["profile_id"]);
    let more = frames_until(&mut ws, |f| is_created(f, b_id)).await;
    let joined = more.last().unwrap();
    assert_eq!(joined["profile_id"], a["profile_id"]);
    assert_eq!(joined["member_ids"], json!([a_id, b_id]));
    assert_eq!(joined["reason"], "member_created");

    // Changing b's email splits it off: the old profile is updated with the reason.
    let patched = ok(
        &server,
        Method::PATCH,
        &format!("/api/v1/orgs/{org}/chat/members/{b_id}"),
        &admin,
        json!({ "display_email": "b@x.com" }),
    )
    .await;
    let b_profile = patched["profile_id"].clone();
    assert_ne!(b_profile, a["profile_id"]);
    let split = frames_until(&mut ws, |f| {
        f["type"] == "profile_updated" && f["profile_id"] == a["profile_id"]
    })
    .await;
    let left = split.last().unwrap();
    assert_eq!(left["member_ids"], json!([a_id]));
    assert_eq!(left["reason"], "member_updated");

    // change-unification moves b back by hand.
    ok(
        &server,
        Method::POST,
        &format!("/api/v1/orgs/{org}/chat/members/{b_id}/change-unification"),
        &admin,
        json!({ "unify_key": "display_email", "value": "a@x.com" }),
    )
    .await;
    let changed = frames_until(&mut ws, |f| f["reason"] == "change_unification").await;
    let last = changed.last().unwrap();
    assert_eq!(last["type"], "profile_updated");

    let all: Vec<Value> = frames
        .into_iter()
        .chain(more)
        .chain(split)
        .chain(changed)
        .collect();
    let seqs = seqs(&all);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs must be consecutive: {seqs:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_replays_then_goes_live_without_gap_or_duplicate() {
    let server = Server::start().await;
    let (org, admin) = keyed_org(&server).await;
    // The reference sees every event from the start.
    let mut reference = subscribe(&server, org, &admin, None).await;
    let mut tenth = 0;
    for i in 0..10 {
        let m = create_member(
            &server,
            org,
            &admin,
            &format!("m{i}"),
            &format!("{i}@x.com"),
        )
        .await;
        tenth = m["id"].as_u64().unwrap();
    }
    let mut everything = frames_until(&mut reference, |f| is_created(f, tenth)).await;
    let first_seq = everything[0]["seq"].as_u64().unwrap();
    // Writes keep coming while the replaying subscriber connects.
    let writer = {
        let http = server.client.clone();
        let url = format!("{}/api/v1/orgs/{org}/chat/members", server.base);
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 10..40 {
                let member: Value = http
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&json!({ "external_member_id": format!("m{i}"),
                        "display_email": format!("{}@x.com", i % 7) }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                last = member["id"].as_u64().unwrap();
            }
            last
        })
    };
    let mut replaying = subscribe(&server, org, &admin, Some(first_seq + 2)).await;
    let last_member = writer.await.unwrap();
    everything.extend(frames_until(&mut reference, |f| is_created(f, last_member)).await);
    let all_seqs = seqs(&everything);
    let last_seq = *all_seqs.last().unwrap();
    assert_consecutive(&all_seqs, first_seq, last_seq);

    let replayed = frames_until(&mut replaying, |f| f["seq"] == json!(last_seq)).await;
    assert_consecutive(&seqs(&replayed), first_seq + 3, last_seq);
    assert_eq!(
        replayed[..],
        everything[3..],
        "replayed frames equal the live ones"
    );

    // Caught up: `since` equal to the newest seq replays nothing and then goes live.
    let mut current = subscribe(&server, org, &admin, Some(last_seq)).await;
    let next = create_member(&server, org, &admin, "next", "next@x.com").await;
    let frames = frames_until(&mut current, |f| {
        is_created(f, next["id"].as_u64().unwrap())
    })
    .await;
    assert_eq!(frames[0]["seq"], json!(last_seq + 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_older_than_retention_starts_with_resync_required() {
    let server = Server::start_with(|c| c.events.retain = 5).await;
    let (org, admin) = keyed_org(&server).await;
    let mut reference = subscribe(&server, org, &admin, None).await;
    let mut last_member = 0;
    for i in 0..12 {
        let m = create_member(
            &server,
            org,
            &admin,
            &format!("m{i}"),
            &format!("{i}@x.com"),
        )
        .await;
        last_member = m["id"].as_u64().unwrap();
    }
    let everything = frames_until(&mut reference, |f| is_created(f, last_member)).await;
    let last_seq = *seqs(&everything).last().unwrap();
    let oldest = last_seq - 4;

    let mut stale = subscribe(&server, org, &admin, Some(1)).await;
    assert_eq!(
        next_frame(&mut stale).await,
        json!({ "type": "resync_required", "oldest_seq": oldest })
    );
    // The connection goes on with live events.
    let m = create_member(&server, org, &admin, "after", "after@x.com").await;
    let live = frames_until(&mut stale, |f| is_created(f, m["id"].as_u64().unwrap())).await;
    assert_eq!(
        live[0]["seq"],
        json!(last_seq + 1),
        "live events follow at once"
    );
    let newest = *seqs(&live).last().unwrap();

    // `since` right before the oldest retained event is still a complete replay.
    let mut edge = subscribe(&server, org, &admin, Some(newest - 5)).await;
    let replayed = frames_until(&mut edge, |f| f["seq"] == json!(newest)).await;
    assert_consecutive(&seqs(&replayed), newest - 4, newest);

    // A seq ahead of the scope (of another scope, or of lost history) also needs a resync.
    let mut ahead = subscribe(&server, org, &admin, Some(newest + 100)).await;
    let frame = next_frame(&mut ahead).await;
    assert_eq!(frame["type"], "resync_required");
    // ... and live events follow it, though their seqs are below the `since` given.
    let m = create_member(&server, org, &admin, "later", "later@x.com").await;
    let live = frames_until(&mut ahead, |f| is_created(f, m["id"].as_u64().unwrap())).await;
    assert_eq!(live[0]["seq"], json!(newest + 1));
    server.stop().await;
}

/// A websocket client on a raw socket with a small receive buffer: it reads only when told to
/// and never answers pings.
struct RawClient {
    stream: TcpStream,
    /// Bytes read after the handshake.
    buffer: Vec<u8>,
}

/// A server-to-client websocket frame (never masked, never fragmented by the server).
#[derive(Debug, PartialEq)]
enum RawFrame {
    Text(String),
    Ping,
    Close(u16),
    Other(u8),
}

impl RawClient {
    async fn connect(server: &Server, org: u64, token: &str) -> RawClient {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(server.addr).await.unwrap();
        let request = format!(
            "GET /api/v1/orgs/{org}/ws?access_token={token} HTTP/1.1\r\nHost: {}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n, 1, "the server closed during the handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawClient {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Reads until the server closes the connection, and returns every frame.
    async fn read_to_end(mut self) -> Vec<RawFrame> {
        let mut chunk = vec![0u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("the server did not close the connection")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
        parse_frames(&self.buffer)
    }
}

fn parse_frames(mut bytes: &[u8]) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        if bytes.len() < header + len {
            break;
        }
        let payload = &bytes[header..header + len];
        frames.push(match opcode {
            1 => RawFrame::Text(String::from_utf8(payload.to_vec()).unwrap()),
            8 => RawFrame::Close(u16::from_be_bytes([payload[0], payload[1]])),
            9 => RawFrame::Ping,
            other => RawFrame::Other(other),
        });
        bytes = &bytes[header + len..];
    }
    frames
}

/// Returns the value of an unlabelled counter in the Prometheus text.
async fn counter(server: &Server, name: &str) -> u64 {
    server
        .metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_lagged_while_others_get_everything() {
    let server = Server::start_with(|c| {
        c.events.ws_queue = 32;
        // The lagged client is given one ping interval to read up to `lagged`.
        c.events.ping_interval_s = 120;
        c.events.retain = 1000;
        c.unify.max_members_per_value = 100_000;
    })
    .await;
    let (org, admin) = keyed_org(&server).await;
    // A big profile first, so that every later frame is large (KiBs of member ids): the
    // kernel buffers of the connection that never reads fill after a few MiB.
    let ndjson: String = (0..1500)
        .map(|i| format!("{{\"external_member_id\":\"big{i}\",\"display_email\":\"big@x.com\"}}\n"))
        .collect();
    let job = server.start_import(org, &admin, ndjson).await;
    server.finished_import(org, &admin, job).await;

    let lagged_before = counter(&server, "unify_ws_lagged_total").await;
    let slow = RawClient::connect(&server, org, &admin).await;
    let mut fast = subscribe(&server, org, &admin, None).await;
    let mut fast_frames = Vec::new();
    let mut lagged = false;
    for round in 0..200 {
        // A few concurrent creates (group-committed together), then the fast subscriber
        // reads their frames.
        let created = futures_util::future::join_all((0..8).map(|i| {
            let server = &server;
            let admin = &admin;
            async move {
                let external = format!("more{round}-{i}");
                create_member(server, org, admin, &external, "big@x.com").await
            }
        }))
        .await;
        let mut waiting: Vec<u64> = created.iter().map(|m| m["id"].as_u64().unwrap()).collect();
        while !waiting.is_empty() {
            let frame = next_frame(&mut fast).await;
            waiting.retain(|&id| !is_created(&frame, id));
            fast_frames.push(frame);
        }
        if counter(&server, "unify_ws_lagged_total").await > lagged_before {
            lagged = true;
            break;
        }
    }
    assert!(lagged, "the subscriber that never reads was not lagged");
    // The fast subscriber is unaffected: one more event still arrives, after all the others.
    let m = create_member(&server, org, &admin, "sentinel", "s@x.com").await;
    let id = m["id"].as_u64().unwrap();
    fast_frames.extend(frames_until(&mut fast, |f| is_created(f, id)).await);
    let fast_seqs = seqs(&fast_frames);
    assert!(
        fast_seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{fast_seqs:?}"
    );

    // The slow one reads at last: a gapless prefix, then `lagged`, then the close.
    let frames = slow.read_to_end().await;
    let (close, rest) = frames.split_last().expect("no frames");
    assert_eq!(close, &RawFrame::Close(1013));
    let (lagged_frame, events) = rest.split_last().expect("no lagged frame");
    assert_eq!(lagged_frame, &RawFrame::Text(r#"{"type":"lagged"}"#.into()));
    let slow_seqs: Vec<u64> = events
        .iter()
        .map(|f| match f {
            RawFrame::Text(text) => serde_json::from_str::<Value>(text).unwrap()["seq"]
                .as_u64()
                .unwrap(),
            other => panic!("unexpected frame {other:?}"),
        })
        .collect();
    assert!(!slow_seqs.is_empty());
    assert_eq!(
        slow_seqs[..],
        fast_seqs[..slow_seqs.len()],
        "a prefix of the stream"
    );
    assert!(slow_seqs.len() < fast_seqs.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_readers_and_close_clients_that_do_not_answer() {
    let server = Server::start_with(|c| c.events.ping_interval_s = 1).await;
    let (org, admin) = keyed_org(&server).await;
    // A raw client never answers: it is pinged, then closed.
    let silent = RawClient::connect(&server, org, &admin).await;
    let silent = tokio::spawn(silent.read_to_end());
    // A tungstenite client answers pings while it reads (the pong goes out with the next
    // read), and stays through several intervals.
    let mut reader = subscribe(&server, org, &admin, None).await;
    let mut pings = 0;
    while pings < 4 {
        let message = tokio::time::timeout(DEADLINE, reader.next())
            .await
            .expect("no ping before the deadline")
            .expect("the answering client was closed")
            .unwrap();
        match message {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let frames = silent.await.unwrap();
    assert_eq!(frames.first(), Some(&RawFrame::Ping), "{frames:?}");
    assert_eq!(frames.last(), Some(&RawFrame::Close(1008)), "{frames:?}");
    // The reader still gets events.
    let m = create_member(&server, org, &admin, "x", "x@x.com").await;
    frames_until(&mut reader, |f| is_created(f, m["id"].as_u64().unwrap())).await;
    server.stop().await;
}

/// Attempts an upgrade and returns the refusal's status and JSON body.
async fn refused(request: impl IntoClientRequest + Unpin) -> (StatusCode, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().expect("an error body");
            let content_type = response.headers()["content-type"].to_str().unwrap();
            assert_eq!(content_type, "application/json");
            (response.status(), serde_json::from_slice(&body).unwrap())
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn assert_error(refusal: (StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(refusal.0, status, "{}", refusal.1);
    assert_eq!(refusal.1["error"]["code"], code, "{}", refusal.1);
    assert!(refusal.1["error"]["message"].is_string());
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_happen_before_the_upgrade_with_the_error_body() {
    let server = Server::start().await;
    let (account, admin) = server.account("acme").await;
    let org = server.org(&admin, "maac", "maac org").await;
    let caac = server.org(&admin, "caac", "caac org").await;
    let (_, other_admin) = server.account("other").await;

    let url = |query: &str| ws_url(&server, org, query);
    assert_error(
        refused(url("")).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    assert_error(
        refused(url("?access_token=not-a-jwt")).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    let claims = Claims {
        sub: "x".into(),
        role: Role::Admin,
        account_id: Some(account),
        org_ids: Vec::new(),
        iat: now_s(),
        exp: now_s() + 3600,
        aud: "unify-api".into(),
        iss: "unify".into(),
    };
    let forged = sign(&claims, "another-secret");
    assert_error(
        refused(url(&format!("?access_token={forged}"))).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    let expired = sign(
        &Claims {
            iat: now_s() - 7200,
            exp: now_s() - 3600,
            ..claims.clone()
        },
        SECRET,
    );
    assert_error(
        refused(url(&format!("?access_token={expired}"))).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    // The same claims, validly signed, are accepted (the refusals above are about the token).
    let valid = sign(&claims, SECRET);
    subscribe(&server, org, &valid, None).await;
    // A header token that is wrong is refused too.
    let mut request = url("").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {forged}").parse().unwrap());
    assert_error(
        refused(request).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );

    // Another account's org, an agent without the org, an org that does not exist: 404.
    assert_error(
        refused(url(&format!("?access_token={other_admin}"))).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    let agent = server.agent(account, vec![caac]);
    assert_error(
        refused(url(&format!("?access_token={agent}"))).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_error(
        refused(ws_url(&server, 999_999, &format!("?access_token={admin}"))).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    // Root never uses orgs: 403.
    let root = server.root();
    assert_error(
        refused(url(&format!("?access_token={root}"))).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    );
    // The agent of the org is accepted.
    let agent = server.agent(account, vec![org]);
    subscribe(&server, org, &agent, None).await;

    // Bad query parameters.
    assert_error(
        refused(url(&format!("?access_token={admin}&since=abc"))).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
    );
    assert_error(
        refused(url(&format!("?access_token={admin}&since=-1"))).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
    );
    assert_error(
        refused(url(&format!("?access_token={admin}&follow=1"))).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
    );

    // The route is in the OpenAPI document.
    let (status, doc) = server.get("/openapi.json", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/orgs/{org_id}/ws"]["get"].is_object());

    // A plain GET (no upgrade) is refused with the error body too.
    let (status, body) = server.get(&format!("/api/v1/orgs/{org}/ws"), &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_ARGUMENT");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_follows_its_org_through_integrate() {
    let server = Server::start().await;
    let (_, admin) = server.account("acme").await;
    let caac = server.org(&admin, "caac", "caac org").await;
    let maac = server.org(&admin, "maac", "maac org").await;
    let joint = scope_of(&server, caac, &admin).await;
    assert_ne!(scope_of(&server, maac, &admin).await, joint);
    create_member(&server, maac, &admin, "m1", "m1@x.com").await;
    let mut ws = subscribe(&server, maac, &admin, None).await;

    ok(
        &server,
        Method::POST,
        "/api/v1/applications/cdh/integrate",
        &admin,
        json!({ "unify_keys": ["display_email"] }),
    )
    .await;
    assert_eq!(scope_of(&server, maac, &admin).await, joint);
    let first = next_frame(&mut ws).await;
    assert_eq!(first["type"], "resync_required", "{first}");
    // From now on the frames are the joint scope's.
    let m = create_member(&server, maac, &admin, "m2", "m2@x.com").await;
    let frames = frames_until(&mut ws, |f| is_created(f, m["id"].as_u64().unwrap())).await;
    assert!(
        frames.iter().all(|f| f["unify_scope_id"] == json!(joint)),
        "{frames:?}"
    );

    // Disconnect gives the maac org a scope of its own again: followed the same way.
    let (status, body) = server
        .post("/api/v1/applications/cdh/disconnect", &admin, Value::Null)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let split = scope_of(&server, maac, &admin).await;
    assert_ne!(split, joint);
    frames_until(&mut ws, |f| f["type"] == "resync_required").await;
    let m = create_member(&server, maac, &admin, "m3", "m3@x.com").await;
    let frames = frames_until(&mut ws, |f| is_created(f, m["id"].as_u64().unwrap())).await;
    assert!(
        frames.iter().all(|f| f["unify_scope_id"] == json!(split)),
        "{frames:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_socket() {
    let server = Server::start().await;
    let (org, admin) = keyed_org(&server).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(subscribe(&server, org, &admin, None).await);
    }
    server.stop().await;
    for mut ws in sockets {
        let close = loop {
            let message = tokio::time::timeout(DEADLINE, ws.next())
                .await
                .expect("the socket was not closed");
            match message {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                other => panic!("ended without a close frame: {other:?}"),
            }
        };
        let code: u16 = close.expect("a close code").code.into();
        assert_eq!(code, 1001);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closes_when_its_token_expires() {
    let server = Server::start().await;
    let (account, admin) = server.account("acme").await;
    let org = server.org(&admin, "maac", "maac org").await;
    // Expired 25 s ago: still inside the 30 s leeway, so accepted, for about 5 s more.
    let claims = Claims {
        sub: "x".into(),
        role: Role::Admin,
        account_id: Some(account),
        org_ids: Vec::new(),
        iat: now_s() - 3600,
        exp: now_s() - 25,
        aud: "unify-api".into(),
        iss: "unify".into(),
    };
    let mut ws = subscribe(&server, org, &sign(&claims, SECRET), None).await;
    let close = loop {
        let message = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("the socket was not closed at expiry");
        match message {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame"),
            Some(Ok(_)) => {}
            other => panic!("ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "token expired");
    server.stop().await;
}

#[tokio::test]
async fn a_large_import_does_not_lag_a_subscriber_that_reads() {
    let server = Server::start().await;
    let (org, admin) = keyed_org(&server).await;
    let mut ws = subscribe(&server, org, &admin, None).await;
    // One import chunk commits thousands of events at once: more than the per-connection
    // queue (1024 frames) holds.
    let body: String = (0..6000)
        .map(|i| {
            format!(
                "{{\"external_member_id\":\"bulk-{i}\",\"display_email\":\"p{}@x.com\"}}\n",
                i / 3
            )
        })
        .collect();
    server.start_import(org, &admin, body).await;
    let frames = frames_until(&mut ws, |f| {
        assert_ne!(f["type"], "lagged", "a reading subscriber is never lagged");
        f["type"] == "merge_progress" && f["is_finished"] == true && f["total"] == 6000
    })
    .await;
    let seqs = seqs(&frames);
    assert_consecutive(&seqs, seqs[0], *seqs.last().unwrap());
    let members: usize = frames
        .iter()
        .filter(|f| f["type"] == "profile_updated")
        .map(|f| f["member_ids"].as_array().unwrap().len())
        .sum();
    assert!(
        members >= 6000,
        "every imported member is in a profile frame ({members})"
    );
    server.stop().await;
}
