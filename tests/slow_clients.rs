//! Slow and idle clients against a real server on `127.0.0.1:0` (raw TCP clients): a half-sent
//! request head is closed after `http.header_read_timeout_ms`, a body that stops arriving is
//! answered `408` after `http.body_idle_timeout_ms` and writes nothing, `http.max_connections`
//! idle sockets cannot keep the server from serving once they time out, a websocket holds its
//! connection slot until it closes, and websockets outlive both timeouts.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, Server, eventually};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Reads everything the server sends until it closes the connection (end of stream or reset);
/// `None` when the connection is still open after `wait`.
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    tokio::time::timeout(wait, async {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
}

/// Splits a raw HTTP/1.1 response into its head and its body.
fn split_response(received: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(received);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

/// The head of a request to `path` with a bearer token and a JSON body of `length` bytes.
fn json_request_head(path: &str, token: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: unify\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

async fn member_count(s: &Server, path: &str, token: &str) -> usize {
    let (status, page) = s.get(path, token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["members"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_half_sent_request_head_and_an_idle_keep_alive_connection_are_closed() {
    let s = Server::start_with(|c| c.http.header_read_timeout_ms = 1000).await;

    // Taken before the connection exists, so that the header timeout, which starts when the
    // server accepts, has certainly run in full by the time the connection is closed.
    let started = Instant::now();
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(b"POST /api/v1/accounts HTTP/1.1\r\nHost: unify\r\nContent-Ty")
        .await
        .unwrap();
    let received = read_until_closed(&mut half, DEADLINE).await;
    assert!(
        received.is_some(),
        "a half-sent request head is held open past {DEADLINE:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "closed after {:?}, before the header timeout",
        started.elapsed()
    );

    // A keep-alive connection that got its answer and then says nothing is closed as well.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: unify\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut idle, DEADLINE)
        .await
        .expect("an idle keep-alive connection is held open");
    let (head, _) = split_response(&received);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let (status, _) = s.get("/healthz", "").await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_answered_408_and_writes_nothing() {
    let s = Server::start_with(|c| c.http.body_idle_timeout_ms = 1000).await;
    let t = s.tenant("slow").await;
    let path = t.path("/chat/members");
    let body = json!({ "channel_id": t.channel_id, "external_member_id": "half" }).to_string();

    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(json_request_head(&path, &t.admin, body.len()).as_bytes())
        .await
        .unwrap();
    stream
        .write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .unwrap();
    let received = read_until_closed(&mut stream, DEADLINE)
        .await
        .expect("a request whose body stopped arriving is held open");
    let (head, error) = split_response(&received);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let error: Value = serde_json::from_str(&error).unwrap_or_else(|_| panic!("{error}"));
    assert_eq!(error["error"]["code"], json!("INVALID_ARGUMENT"), "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");

    assert_eq!(
        member_count(&s, &format!("{path}?limit=10"), &t.admin).await,
        0
    );
    s.stop().await;
}

#[tokio::test]
async fn a_slow_but_steady_import_body_is_not_cut_by_the_idle_timeout() {
    let s = Server::start_with(|c| c.http.body_idle_timeout_ms = 2000).await;
    let (_, admin) = s.account("steady").await;
    let org = s.org(&admin, "maac", "maac org").await;
    let lines: Vec<String> = (0..5)
        .map(|i| format!("{}\n", json!({ "external_member_id": format!("m{i}") })))
        .collect();
    let length: usize = lines.iter().map(String::len).sum();

    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/orgs/{org}/chat/members/import HTTP/1.1\r\nHost: unify\r\n\
         Authorization: Bearer {admin}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Five lines half a second apart: longer in total than the idle timeout, never idle that
    // long.
    for line in &lines {
        stream.write_all(line.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let received = read_until_closed(&mut stream, DEADLINE)
        .await
        .expect("the import is answered");
    let (head, body) = split_response(&received);
    assert!(head.starts_with("HTTP/1.1 202"), "{head}\n{body}");
    let members = format!("/api/v1/orgs/{org}/chat/members?limit=10");
    assert!(eventually(|| async { member_count(&s, &members, &admin).await == 5 }).await);
    s.stop().await;
}

#[tokio::test]
async fn idle_sockets_at_the_connection_cap_wait_for_the_header_timeout_and_the_server_serves_on() {
    const CAP: usize = 4;
    let s = Server::start_with(|c| {
        c.http.max_connections = CAP;
        c.http.header_read_timeout_ms = 3000;
    })
    .await;

    // As many slow clients as the cap allows (the test client's pooled keep-alive connection
    // may hold one more slot for a while: that only makes the wait longer).
    let mut idle = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(s.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: un")
            .await
            .unwrap();
        idle.push(stream);
    }

    // A well-behaved client beyond the cap is not served while they hold every slot...
    let mut polite = TcpStream::connect(s.addr).await.unwrap();
    polite
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: unify\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), polite.read(&mut first)).await;
    assert!(
        early.is_err(),
        "a connection beyond the cap was served at once: {early:?}"
    );

    // ...and is served once the header timeout has closed them.
    let received = read_until_closed(&mut polite, DEADLINE)
        .await
        .expect("the client beyond the cap is never served");
    let (head, _) = split_response(&received);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for mut stream in idle {
        assert!(
            read_until_closed(&mut stream, DEADLINE).await.is_some(),
            "a slow client is held open"
        );
    }

    let (status, _) = s.get("/healthz", "").await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_websocket_outlives_the_header_and_body_timeouts() {
    let s = Server::start_with(|c| {
        c.http.header_read_timeout_ms = 1000;
        c.http.body_idle_timeout_ms = 1000;
    })
    .await;
    let (_, admin) = s.account("ws").await;
    let org = s.org(&admin, "maac", "maac org").await;
    let url = format!("ws://{}/api/v1/orgs/{org}/ws?access_token={admin}", s.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    // A slow client opened after the websocket is closed by the header timeout...
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: un")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut half, DEADLINE).await.is_some(),
        "the header timeout is not enforced"
    );
    // ...while the websocket, older than it, stays open past another timeout...
    let quiet = tokio::time::timeout(Duration::from_millis(1500), ws.next()).await;
    assert!(quiet.is_err(), "the websocket ended: {quiet:?}");

    // ...and still streams events.
    let (status, member) = s
        .post(
            &format!("/api/v1/orgs/{org}/chat/members"),
            &admin,
            json!({ "external_member_id": "after-the-timeouts" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let mentions_member = |frame: &Value| {
        frame["member_id"] == member["id"]
            || frame["member_ids"]
                .as_array()
                .is_some_and(|ids| ids.contains(&member["id"]))
    };
    let streamed = tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if mentions_member(&serde_json::from_str(&text).unwrap()) {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the websocket ended: {other:?}"),
            }
        }
    })
    .await;
    assert!(streamed.is_ok(), "no frame of the new member");
    s.stop().await;
}

#[tokio::test]
async fn websockets_hold_their_connection_slot_until_they_close() {
    let s = Server::start_with(|c| {
        c.http.max_connections = 2;
        c.http.header_read_timeout_ms = 1000;
    })
    .await;
    let (_, admin) = s.account("ws").await;
    let org = s.org(&admin, "maac", "maac org").await;
    let url = format!("ws://{}/api/v1/orgs/{org}/ws?access_token={admin}", s.addr);
    // The second handshake waits, if need be, for the test client's idle keep-alive connection
    // to time out: then the two websockets hold both slots.
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (_second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();

    let mut polite = TcpStream::connect(s.addr).await.unwrap();
    polite
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: unify\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), polite.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a connection beyond the cap was served while two websockets were open: {early:?}"
    );

    first.close(None).await.unwrap();
    let received = read_until_closed(&mut polite, DEADLINE)
        .await
        .expect("a closed websocket does not free its slot");
    let (head, _) = split_response(&received);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.stop().await;
}

/// Returns the `unify_http_connections` gauge, read over a connection of its own that is not
/// kept (so that it counts itself once).
async fn open_connections(s: &Server) -> Option<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let text = client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("unify_http_connections "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_closed() {
    let s = Server::start_with(|c| c.http.write_idle_timeout_ms = 1000).await;
    let t = s.tenant("reader").await;
    // A page (about 8 MB) far larger than what the socket buffers hold for a client that reads
    // nothing.
    let name = "x".repeat(8000);
    let ndjson: String = (0..1000)
        .map(|i| {
            format!(
                "{{\"channel_id\":{},\"external_member_id\":\"member-{i}\",\"display_name\":\"{name}\"}}\n",
                t.channel_id
            )
        })
        .collect();
    let job = s.start_import(t.org_id, &t.admin, ndjson).await;
    s.finished_import(t.org_id, &t.admin, job).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(s.addr).await.unwrap();
    let path = t.path("/chat/members?limit=1000");
    reader
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: unify\r\nAuthorization: Bearer {}\r\n\r\n",
                t.admin
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Once the write timeout has passed, the server has dropped the reader's connection: only
    // the connection reading the gauge is left (the setup's idle keep-alive connections close
    // after the header timeout).
    let closed = eventually(|| async { open_connections(&s).await == Some(1.0) }).await;
    assert!(
        closed,
        "a client that reads nothing keeps its connection: {:?} open",
        open_connections(&s).await
    );
    let received = read_until_closed(&mut reader, DEADLINE).await;
    assert!(received.is_some(), "the reader's connection is still open");
}
