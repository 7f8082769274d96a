//! The binary's token story (SPEC 4.1, 8): first start prints a root token, the secret is
//! generated once into the data directory, and `unify token` mints tokens the running server
//! accepts.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::call_at;
use reqwest::{Method, StatusCode};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_unify");

fn token(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("UNIFY_JWT_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn first_start_prints_a_root_token_and_cli_tokens_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("UNIFY_JWT_SECRET")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(("out", line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(("err", line));
        }
    });
    let (mut root, mut addr) = (None, None);
    while root.is_none() || addr.is_none() {
        let (stream, line) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server prints a root token and its address");
        if stream == "out" && line.starts_with("eyJ") {
            root = Some(line);
        } else if let Some(rest) = line.split("addr=").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    let (root, addr) = (root.unwrap(), addr.unwrap());
    let secret = std::fs::read(dir.path().join("jwt_secret")).unwrap();
    assert_eq!(secret.len(), 64, "a generated 32-byte hex secret");

    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let (status, account) = call_at(
        &client,
        &base,
        Method::POST,
        "/api/v1/accounts",
        &root,
        json!({ "name": "acme" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let account_id = account["id"].as_u64().unwrap().to_string();
    let admin = token(
        dir.path(),
        &["--role", "admin", "--account", &account_id, "--ttl", "10m"],
    );
    let (status, org) = call_at(
        &client,
        &base,
        Method::POST,
        "/api/v1/applications/organizations",
        &admin,
        json!({ "source": "caac", "name": "chat" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    assert_eq!(
        std::fs::read(dir.path().join("jwt_secret")).unwrap(),
        secret,
        "the secret is generated once"
    );
    let status = Command::new(BIN)
        .args(["token", "--role", "agent", "--data-dir"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "agent tokens need an account");

    send_sigterm(child.id());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}");
}

/// Sends SIGTERM through the `kill` command (the crate forbids unsafe code).
fn send_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
