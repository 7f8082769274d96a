//! P5 (SPEC 9): delivery latency of one event to 10k websocket subscribers of one org.
//!
//! `cargo bench --bench ws_fanout` (release build). The bench starts the server as a child
//! process (this same binary, `UNIFY_WS_FANOUT_ROLE=server`) so that the server's 10k sockets
//! and the clients' 10k sockets each fit under a 20k open-file limit; it raises its soft limit
//! to the hard one if needed. It then opens `UNIFY_WS_SUBSCRIBERS` (default 10000) websockets
//! to one maac org and, per round, creates one member over HTTP: that one `profile_updated`
//! event is fanned out to every subscriber. For each subscriber it records when the frame
//! arrived; latency is measured from the moment the HTTP request was sent (so it includes the
//! HTTP call and the durable commit), and also from the moment the HTTP response arrived (the
//! event is published right after the reply: this is close to the pure fan-out time). Each
//! round reports p50/p99/max over the subscribers; the summary gives the medians over
//! `UNIFY_WS_ROUNDS` rounds (default 20, after one warm-up round). Server and clients share the
//! machine's cores.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use unify::auth::{Role, Tokens};
use unify::config::Config;

const SECRET: &str = "secret-of-the-ws-fanout-bench";
const ROLE_ENV: &str = "UNIFY_WS_FANOUT_ROLE";
const DIR_ENV: &str = "UNIFY_WS_FANOUT_DIR";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    if std::env::var(ROLE_ENV).as_deref() == Ok("server") {
        return serve();
    }
    let subscribers = env_or("UNIFY_WS_SUBSCRIBERS", 10_000);
    let rounds = env_or("UNIFY_WS_ROUNDS", 20);
    raise_fd_limit(subscribers as u64 + 1024);
    let dir = tempfile::tempdir()?;
    let mut server = Server::spawn(dir.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(bench(&server.addr, subscribers, rounds));
    server.stop();
    result
}

/// Makes sure the soft open-file limit allows `wanted` descriptors: below it (and if the hard
/// limit allows), the bench runs itself again under `sh -c 'ulimit -n ...'`, which needs no
/// extra dependency; when even the hard limit is too low it stops with a message.
fn raise_fd_limit(wanted: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some((soft, hard)) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let mut fields = l.split_whitespace().skip(3);
            let soft = fields.next()?.parse::<u64>().ok();
            let hard = fields.next()?;
            Some((soft?, hard.parse::<u64>().unwrap_or(u64::MAX)))
        })
    else {
        return;
    };
    if soft >= wanted {
        println!("ws_fanout: open-file limit {soft} (needs {wanted})");
        return;
    }
    if hard < wanted || std::env::var_os("UNIFY_WS_FANOUT_RAISED").is_some() {
        eprintln!(
            "ws_fanout: the open-file limit is {soft} (hard {hard}), {wanted} are needed; \
             raise it (`ulimit -n {wanted}`) or lower UNIFY_WS_SUBSCRIBERS"
        );
        std::process::exit(2);
    }
    let exe = std::env::current_exe().expect("the bench binary");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {wanted} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env("UNIFY_WS_FANOUT_RAISED", "1")
        .status()
        .expect("sh runs");
    std::process::exit(status.code().unwrap_or(1));
}

/// The server child: runs `unify::run` on `127.0.0.1:0` until its stdin closes.
fn serve() -> anyhow::Result<()> {
    let dir = std::env::var(DIR_ENV)?;
    let mut config = Config {
        data_dir: dir.into(),
        ..Config::default()
    };
    config.auth.jwt_secret = Some(SECRET.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("LISTEN {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
            })
            .await;
        };
        unify::run(config, listener, stdin_closed).await
    })
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn spawn(dir: &std::path::Path) -> anyhow::Result<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, "server")
            .env(DIR_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .ok_or_else(|| anyhow::anyhow!("the server exited"))??;
            if let Some(addr) = line.strip_prefix("LISTEN ") {
                break addr.to_owned();
            }
        };
        // Keeps draining the child's stdout so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, addr })
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Receive times (ns since `base`) per subscriber, and how many arrived this round.
struct Arrivals {
    base: Instant,
    at: Vec<AtomicU64>,
    count: AtomicUsize,
}

async fn bench(addr: &str, subscribers: usize, rounds: usize) -> anyhow::Result<()> {
    let tokens = Tokens::new(SECRET.as_bytes(), "unify");
    let http = reqwest::Client::new();
    let base_url = format!("http://{addr}");
    let root = tokens.issue("bench", Role::Root, None, Vec::new(), 3600)?;
    let account: Value = http
        .post(format!("{base_url}/api/v1/accounts"))
        .bearer_auth(&root)
        .json(&json!({ "name": "bench" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let account_id = account["id"].as_u64().expect("account id");
    let admin = tokens.issue("bench", Role::Admin, Some(account_id), Vec::new(), 3600)?;
    let org: Value = http
        .post(format!("{base_url}/api/v1/applications/organizations"))
        .bearer_auth(&admin)
        .json(&json!({ "source": "maac", "name": "bench" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let org_id = org["id"].as_u64().expect("org id");

    let arrivals = Arc::new(Arrivals {
        base: Instant::now(),
        at: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
        count: AtomicUsize::new(0),
    });
    let url = format!("ws://{addr}/api/v1/orgs/{org_id}/ws?access_token={admin}");
    let connecting = Instant::now();
    let limit = Arc::new(Semaphore::new(128));
    let mut connects = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (url, arrivals, limit) = (url.clone(), arrivals.clone(), limit.clone());
        connects.push(tokio::spawn(async move {
            let permit = limit.acquire_owned().await.expect("open semaphore");
            let config = WebSocketConfig::default().read_buffer_size(4096);
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(url, Some(config), false)
                    .await
                    .expect("websocket connect");
            drop(permit);
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(_) = message {
                        let ns = arrivals.base.elapsed().as_nanos() as u64;
                        arrivals.at[i].store(ns, Ordering::Release);
                        arrivals.count.fetch_add(1, Ordering::AcqRel);
                    }
                }
            });
        }));
    }
    for connect in connects {
        connect.await?;
    }
    println!(
        "ws_fanout: {subscribers} subscribers connected in {:.1} s",
        connecting.elapsed().as_secs_f64()
    );

    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut fan_p50s = Vec::new();
    let mut fan_p99s = Vec::new();
    let mut https = Vec::new();
    for round in 0..=rounds {
        arrivals.count.store(0, Ordering::Release);
        let sent = Instant::now();
        http.post(format!("{base_url}/api/v1/orgs/{org_id}/chat/members"))
            .bearer_auth(&admin)
            .json(&json!({ "external_member_id": format!("bench-{round}") }))
            .send()
            .await?
            .error_for_status()?;
        let answered = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(60);
        while arrivals.count.load(Ordering::Acquire) < subscribers {
            anyhow::ensure!(
                Instant::now() < deadline,
                "round {round}: only {} of {subscribers} subscribers got the event",
                arrivals.count.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let since = |t: Instant| (t - arrivals.base).as_nanos() as u64;
        let (sent_ns, answered_ns) = (since(sent), since(answered));
        let mut from_sent: Vec<f64> = arrivals
            .at
            .iter()
            .map(|a| ms(a.load(Ordering::Acquire).saturating_sub(sent_ns)))
            .collect();
        let mut from_answer: Vec<f64> = arrivals
            .at
            .iter()
            .map(|a| ms(a.load(Ordering::Acquire).saturating_sub(answered_ns)))
            .collect();
        from_sent.sort_by(f64::total_cmp);
        from_answer.sort_by(f64::total_cmp);
        let http_ms = ms(answered_ns - sent_ns);
        let (p50, p99, max) = (
            pct(&from_sent, 0.50),
            pct(&from_sent, 0.99),
            from_sent[from_sent.len() - 1],
        );
        println!(
            "round {round:2}{}: p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms  \
             (http {http_ms:6.2} ms; after the response p50 {:7.2} p99 {:7.2})",
            if round == 0 { " (warm-up)" } else { "" },
            pct(&from_answer, 0.50),
            pct(&from_answer, 0.99),
        );
        if round > 0 {
            p50s.push(p50);
            p99s.push(p99);
            fan_p50s.push(pct(&from_answer, 0.50));
            fan_p99s.push(pct(&from_answer, 0.99));
            https.push(http_ms);
        }
        // Lets the sockets settle between rounds.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "P5 ws_fanout: {subscribers} subscribers, {rounds} rounds, medians: \
         p50 {:.2} ms, p99 {:.2} ms from the request (http {:.2} ms); \
         p50 {:.2} ms, p99 {:.2} ms from the response",
        median(&mut p50s),
        median(&mut p99s),
        median(&mut https),
        median(&mut fan_p50s),
        median(&mut fan_p99s),
    );
    Ok(())
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
