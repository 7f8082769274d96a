//! Load harness for the HTTP targets of SPEC 9, against the real server on loopback (release
//! build, in this process). Run one scenario or all:
//!
//! ```text
//! cargo bench --bench load -- p3            # change-unification, 64 connections
//! cargo bench --bench load -- big           # P2 import 1M, then P4 restart, then P6 key change
//! UNIFY_LOAD_MEMBERS=200000 cargo bench --bench load -- big
//! cargo bench --bench load -- peer          # P2, then Splink on the same members (see below)
//! ```
//!
//! `peer` runs P2, then `benches/peer/splink_p2.py` on the same members (written to a file
//! first) twice: mobiles compared by their digits, and normalized to E.164 as unify does
//! (`--e164`); it prints each time and its ratio to P2. `UNIFY_SPLINK_PYTHON` names the Python
//! that has `splink`, `duckdb` and `phonenumbers` (default `python3`).
//! It prints one line per measurement; nothing is asserted (targets are read, not tested).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use unify::synth::{GenOptions, GenSource, generate};

#[tokio::main]
async fn main() {
    let scenario = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| "p3".to_owned());
    let members: u64 = std::env::var("UNIFY_LOAD_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    match scenario.as_str() {
        "p3" => p3().await,
        "big" => big(members).await,
        "peer" => peer(members).await,
        other => eprintln!("unknown scenario {other}; use p3, big or peer"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut latencies: Vec<Duration>, elapsed: Duration) {
    latencies.sort_unstable();
    println!(
        "{name}: {} ops in {:.2} s = {:.0} ops/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// P3: change-unification over HTTP from 64 connections on distinct members, for 10 s.
async fn p3() {
    const CONNECTIONS: usize = 64;
    const PER_CONNECTION: usize = 50;
    let s = Arc::new(
        Server::start_with(|c| {
            c.runtime.max_in_flight_per_scope = c.runtime.max_in_flight_per_scope.max(4096);
        })
        .await,
    );
    let t = s.tenant("load").await;
    s.post(
        &t.path("/organization/unify-scope-setting"),
        &t.admin,
        json!({ "unify_keys": [{ "attribute": "display_email", "is_distinct": false },
                               { "attribute": "custom_id", "is_distinct": false }] }),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..CONNECTIONS * PER_CONNECTION {
        let (status, m) = s
            .post(
                &t.path("/chat/members"),
                &t.admin,
                json!({ "channel_id": t.channel_id, "external_member_id": format!("p3-{i}"),
                        "display_email": format!("p{}@x.com", i / 2) }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        ids.push(m["id"].as_u64().unwrap());
    }
    let duration = Duration::from_secs(10);
    let started = Instant::now();
    let tasks: Vec<_> = ids
        .chunks(PER_CONNECTION)
        .map(|chunk| {
            let (s, t, chunk) = (s.clone(), t.clone(), chunk.to_vec());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut k = 0usize;
                while started.elapsed() < duration {
                    let id = chunk[k % chunk.len()];
                    let url = format!(
                        "{}{}",
                        s.base,
                        t.path(&format!("/chat/members/{id}/change-unification"))
                    );
                    let body =
                        json!({ "unify_key": "custom_id", "value": format!("c{id}-{}", k % 2) });
                    let t0 = Instant::now();
                    let response = client
                        .request(Method::POST, url)
                        .bearer_auth(&t.admin)
                        .json(&body)
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            latencies.push(t0.elapsed());
                        }
                        _ => errors += 1,
                    }
                    k += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.unwrap();
        all.extend(l);
        errors += e;
    }
    report(
        "P3 change-unification (64 connections)",
        all,
        started.elapsed(),
    );
    println!("P3 non-2xx or failed requests: {errors}");
}

/// A server on a fresh data dir with the tenant of P2, P4 and P6: a caac org whose keys are
/// email, mobile and distinct custom_id.
async fn big_server() -> (
    tempfile::TempDir,
    unify::config::Config,
    Server,
    common::Tenant,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = unify::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..unify::config::Config::default()
    };
    config.auth.jwt_secret = Some(common::SECRET.to_owned());
    let s = Server::start_in(config.clone()).await;
    let t = s.tenant("big").await;
    s.post(
        &t.path("/organization/unify-scope-setting"),
        &t.admin,
        json!({ "unify_keys": [{ "attribute": "display_email", "is_distinct": false },
                               { "attribute": "display_mobile", "is_distinct": false },
                               { "attribute": "custom_id", "is_distinct": true }] }),
    )
    .await;
    (dir, config, s, t)
}

/// The options of P2's members.
fn p2_members(members: u64, t: &common::Tenant) -> GenOptions {
    GenOptions {
        members,
        seed: 7,
        source: GenSource::Caac,
        channels: vec![t.channel_id],
        people: None,
    }
}

/// P2: streams the NDJSON body from the generator (never held whole in memory) and waits
/// until the job is finished; returns the time from the first byte.
async fn p2(s: &Server, t: &common::Tenant, members: u64) -> Duration {
    let options = p2_members(members, t);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        for (i, m) in generate(&options).enumerate() {
            serde_json::to_writer(&mut buf, &m).unwrap();
            buf.push(b'\n');
            if i % 10_000 == 9_999 && tx.blocking_send(std::mem::take(&mut buf)).is_err() {
                return;
            }
        }
        let _ = tx.blocking_send(buf);
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let started = Instant::now();
    let response = s
        .client
        .post(format!("{}{}", s.base, t.path("/chat/members/import")))
        .bearer_auth(&t.admin)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted = started.elapsed();
    let job: Value = response.json().await.unwrap();
    let path = t.path(&format!("/imports/{}", job["job_id"]));
    loop {
        let (_, j) = s.get(&path, &t.admin).await;
        if j["status"] != json!("running") {
            let elapsed = started.elapsed();
            println!(
                "P2 import of {members} members over HTTP: {:.2} s ({:.0} members/s; body accepted after {:.2} s); status {}, done {}, failed {}; peak RSS {:.0} MiB",
                elapsed.as_secs_f64(),
                members as f64 / elapsed.as_secs_f64(),
                accepted.as_secs_f64(),
                j["status"],
                j["done"],
                j["failed"],
                peak_rss_mb()
            );
            return elapsed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// P2, P4 and P6 on one store of `members` members.
async fn big(members: u64) {
    let (dir, config, s, t) = big_server().await;
    p2(&s, &t, members).await;

    // P4: restart until /readyz answers 200.
    let dir_guard = s.stop().await;
    let started = Instant::now();
    let s = Server::start_in(config.clone()).await;
    println!(
        "P4 restart with {members} members until /readyz is 200: {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // P6: a key change, with member reads from 8 connections until the merge state is finished.
    let started = Instant::now();
    let (status, _) = s
        .call(
            Method::PUT,
            &t.path("/organization/unify-scope-setting/unify-keys"),
            &t.admin,
            json!({ "unify_keys": ["display_email", "custom_id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = Arc::new(s);
    let readers: Vec<_> = (0..8)
        .map(|r| {
            let (s, t, done) = (s.clone(), t.clone(), done.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut id = 1 + r as u64 * 1000;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let t0 = Instant::now();
                    let (status, _) = s
                        .get(&t.path(&format!("/chat/members/{id}")), &t.admin)
                        .await;
                    if status == StatusCode::OK {
                        latencies.push(t0.elapsed());
                    }
                    id = 1 + (id * 7919) % members.max(1);
                }
                latencies
            })
        })
        .collect();
    let mut merge = futures_util::stream::unfold((), |_| async {
        let (_, ms) = s
            .get(
                &t.path("/organization/unify-scope-setting/merge-state"),
                &t.admin,
            )
            .await;
        Some((ms["is_finished"] == json!(true), ()))
    })
    .boxed();
    while let Some(finished) = merge.next().await {
        if finished {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let finished_after = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Release);
    let mut reads = Vec::new();
    for r in readers {
        reads.extend(r.await.unwrap());
    }
    println!(
        "P6 key change on {members} members: merge state finished after {:.2} s",
        finished_after.as_secs_f64()
    );
    report("P6 member reads during the job", reads, finished_after);
    drop(merge);
    if let Ok(s) = Arc::try_unwrap(s) {
        s.stop().await;
    }
    drop(dir_guard);
    drop(dir);
}

/// P2, then Splink on the same members, in one run.
async fn peer(members: u64) {
    let (_dir, _config, s, t) = big_server().await;
    let body = tempfile::NamedTempFile::new().unwrap();
    unify::synth::write_ndjson(&p2_members(members, &t), body.as_file()).unwrap();
    let ours = p2(&s, &t, members).await;
    s.stop().await;
    let python = std::env::var("UNIFY_SPLINK_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer/splink_p2.py");
    for (what, args) in [("digits", &[][..]), ("E.164", &["--e164"][..])] {
        let out = std::process::Command::new(&python)
            .arg(script)
            .arg(body.path())
            .args(args)
            .output()
            .expect("the Splink script runs");
        let line = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            eprintln!(
                "Splink ({what}) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        }
        let total: f64 = line
            .split_whitespace()
            .skip_while(|w| *w != "total")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        println!(
            "{} (mobiles by {what}); unify P2 {:.2} s = {:.2}x Splink's time",
            line.trim(),
            ours.as_secs_f64(),
            ours.as_secs_f64() / total
        );
    }
}
