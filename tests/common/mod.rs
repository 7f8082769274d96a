//! A real server on `127.0.0.1:0` with a fresh data directory, and a JSON client for it.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use unify::auth::{Role, Tokens};
use unify::config::Config;

/// Returns a request header as text (empty when absent or not text), as the stand-ins for
/// external services read them.
pub fn header(headers: &axum::http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The secret the test servers sign tokens with.
pub const SECRET: &str = "test-secret-of-the-api-tests";

/// How long any awaited condition (readiness, a poll, a shutdown, a frame) may take on a loaded
/// machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running server.
pub struct Server {
    /// The listening address, for clients that speak raw TCP.
    pub addr: SocketAddr,
    /// `http://{addr}`.
    pub base: String,
    pub tokens: Tokens,
    pub client: reqwest::Client,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with the embedded defaults.
    pub async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    /// Starts a server with the defaults changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.auth.jwt_secret = Some(SECRET.to_owned());
        configure(&mut config);
        let mut server = Server::start_in(config).await;
        server._dir = Some(dir);
        server
    }

    /// Starts a server on an existing configuration (restarts keep the data directory).
    pub async fn start_in(config: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(unify::run(config.clone(), listener, async move {
            let _ = rx.await;
        }));
        let server = Server {
            addr,
            base: format!("http://{addr}"),
            tokens: Tokens::new(SECRET.as_bytes(), &config.auth.issuer),
            client: reqwest::Client::new(),
            config,
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
        };
        let ready = eventually(|| async {
            server
                .client
                .get(format!("{}/readyz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        assert!(ready, "server did not become ready");
        server
    }

    /// Shuts the server down gracefully (panicking if that takes longer than [`DEADLINE`] or
    /// `run` fails) and returns its data directory (kept alive).
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("graceful shutdown did not finish")
                .unwrap()
                .unwrap();
        }
        self._dir.take()
    }

    pub fn root(&self) -> String {
        self.tokens
            .issue("root", Role::Root, None, Vec::new(), 3600)
            .unwrap()
    }

    pub fn admin(&self, account_id: u64) -> String {
        self.tokens
            .issue("admin", Role::Admin, Some(account_id), Vec::new(), 3600)
            .unwrap()
    }

    pub fn agent(&self, account_id: u64, org_ids: Vec<u64>) -> String {
        self.tokens
            .issue("agent", Role::Agent, Some(account_id), org_ids, 3600)
            .unwrap()
    }

    /// Sends a JSON request (no body when `body` is `Value::Null`) and returns the status and
    /// the JSON body (`Value::Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        call_at(&self.client, &self.base, method, path, token, body).await
    }

    /// Sends raw bytes with an optional content type and returns the status and the JSON body
    /// (`Value::Null` when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(token)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        answer(request).await
    }

    /// Posts a channel event (`raw`) to `path` signed with the channel's webhook `secret`;
    /// returns the status and the JSON answer (`Value::Null` when there is none).
    pub async fn deliver_event(
        &self,
        path: &str,
        secret: &str,
        raw: Vec<u8>,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("x-unify-signature", sign_webhook(secret, &raw))
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Returns the Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, Value::Null).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, body).await
    }

    /// Starts an NDJSON import into org `org` (expecting `202`) and returns its job id.
    pub async fn start_import(&self, org: u64, token: &str, ndjson: String) -> u64 {
        let (status, job) = self
            .send(
                Method::POST,
                &format!("/api/v1/orgs/{org}/chat/members/import"),
                token,
                Some("application/x-ndjson"),
                ndjson.into_bytes(),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        job["job_id"].as_u64().unwrap()
    }

    /// Waits until import job `job_id` of org `org` has finished (panicking after
    /// [`DEADLINE`]) and returns its final record.
    pub async fn finished_import(&self, org: u64, token: &str, job_id: u64) -> Value {
        let path = format!("/api/v1/orgs/{org}/imports/{job_id}");
        let finished = eventually(|| async {
            let (_, job) = self.get(&path, token).await;
            job["status"] == "finished"
        })
        .await;
        let (_, job) = self.get(&path, token).await;
        assert!(finished, "the import did not finish: {job}");
        job
    }

    /// Creates an account; returns its id and an admin token for it.
    pub async fn account(&self, name: &str) -> (u64, String) {
        let (status, account) = self
            .post("/api/v1/accounts", &self.root(), json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{account}");
        let account_id = account["id"].as_u64().unwrap();
        (account_id, self.admin(account_id))
    }

    /// Creates an org of `source` (`caac` or `maac`) in the admin's account; returns its id.
    pub async fn org(&self, admin: &str, source: &str, name: &str) -> u64 {
        let (status, org) = self
            .post(
                "/api/v1/applications/organizations",
                admin,
                json!({ "source": source, "name": name }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{org}");
        org["id"].as_u64().unwrap()
    }

    /// Creates a member on the tenant's channel with `fields` (a JSON object) set, as its
    /// admin; returns the created member.
    pub async fn create_member(&self, t: &Tenant, ext: &str, fields: Value) -> Value {
        let mut body = json!({ "channel_id": t.channel_id, "external_member_id": ext });
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, m) = self.post(&t.path("/chat/members"), &t.admin, body).await;
        assert_eq!(status, StatusCode::CREATED, "{m}");
        m
    }

    /// Creates an account with an admin token, a caac org and one channel.
    pub async fn tenant(&self, name: &str) -> Tenant {
        let (account_id, admin) = self.account(name).await;
        let org_id = self.org(&admin, "caac", &format!("{name} chat")).await;
        let (status, channel) = self
            .post(
                &format!("/api/v1/orgs/{org_id}/channels"),
                &admin,
                json!({ "name": "LINE", "type": "line" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{channel}");
        Tenant {
            account_id,
            admin,
            org_id,
            channel_id: channel["id"].as_u64().unwrap(),
        }
    }
}

/// An account with a caac org and a channel.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub account_id: u64,
    pub admin: String,
    pub org_id: u64,
    pub channel_id: u64,
}

impl Tenant {
    /// Returns the org-scoped path `/api/v1/orgs/{org}{rest}`.
    pub fn path(&self, rest: &str) -> String {
        format!("/api/v1/orgs/{}{}", self.org_id, rest)
    }
}

/// Runs `unify verify` on the data directory `data_dir` and asserts that it passes, showing
/// what it reported otherwise.
pub fn assert_verifies(data_dir: &std::path::Path) {
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_unify"))
        .args(["verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "unify verify failed:\n{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// Sends a JSON request to a server at `base` (`http://host:port`) with `client`: what
/// [`Server::call`] does, for a server this helper did not start (the binary in `cli.rs`).
pub async fn call_at(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if !body.is_null() {
        request = request.json(&body);
    }
    answer(request).await
}

/// Sends `request`; returns the status and the JSON body (`Value::Null` when empty), panicking
/// on a body that is not JSON.
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, value)
}

/// Returns the `X-Unify-Signature` of `body` for a channel's webhook `secret`.
pub fn sign_webhook(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Polls `condition` until it holds or [`DEADLINE`] passes; returns whether it held.
pub async fn eventually<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
