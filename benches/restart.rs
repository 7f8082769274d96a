//! P4 (SPEC 9) with the real binary: time from spawning `unify serve` until `/readyz` answers
//! 200, after a graceful stop (SIGTERM) and after `kill -9`.
//!
//! `UNIFY_BENCH_STORE=DIR cargo bench --bench restart`, where `DIR` is a data directory, e.g.
//! the one `UNIFY_BENCH_STORE=DIR cargo bench --bench import` keeps (1M members). Each kind of
//! restart is timed `UNIFY_BENCH_ROUNDS` times (default 3) and the median is reported.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_unify");

/// Returns a port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Returns true when `GET /readyz` answers 200.
fn ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

/// Spawns the server on `dir` and returns it with the time until it was ready.
fn start(dir: &Path) -> (Child, Duration) {
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unify serve starts");
    let deadline = started + Duration::from_secs(300);
    while !ready(port) {
        assert!(Instant::now() < deadline, "not ready after 300 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "unify serve exited before it was ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, started.elapsed())
}

fn stop(mut child: Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    child.wait().expect("the server exits");
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let Some(dir) = std::env::var_os("UNIFY_BENCH_STORE") else {
        eprintln!("set UNIFY_BENCH_STORE to a data directory (see the module doc)");
        return;
    };
    let dir = Path::new(&dir);
    let rounds: usize = std::env::var("UNIFY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // The first start after an import may still fold journals; it is not timed.
    let (mut child, first) = start(dir);
    println!("first start: ready after {:.2} s", first.as_secs_f64());
    for (signal, name) in [("-TERM", "SIGTERM"), ("-KILL", "kill -9")] {
        let mut times = Vec::new();
        for _ in 0..rounds {
            stop(child, signal);
            let (next, took) = start(dir);
            times.push(took);
            child = next;
        }
        println!(
            "P4 restart after {name}: ready after {:.2} s (median of {rounds}; {:?})",
            median(times.clone()).as_secs_f64(),
            times.iter().map(|t| t.as_secs_f64()).collect::<Vec<_>>()
        );
    }
    stop(child, "-TERM");
}
