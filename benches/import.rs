//! P2 (SPEC 9): bulk import of 1M members into a fresh store, durable, with peak RSS.
//!
//! `cargo bench --bench import` (set `UNIFY_BENCH_MEMBERS` to change the size and
//! `UNIFY_BENCH_CHUNK` the lines per chunk, default `import_chunk`). The members
//! come from `unify gen` (seed 42) spread over three channels of one caac org whose scope has
//! the keys of P1 (email, mobile, distinct custom id). The body is generated to a file first,
//! then streamed to `Runtime::start_import` in 64 KiB pieces, as an HTTP body arrives; the
//! clock runs from the first byte until the job is finished (every chunk durable). Peak RSS is
//! the process's `VmHWM`. It then restarts the runtime on the imported store and reports the
//! time until every scope actor is running (P4).
//!
//! With `UNIFY_BENCH_STORE=DIR` the imported store is kept in `DIR`; when `DIR` already holds
//! one, the import is skipped and only the restart is timed (for profiling P4).

use std::io::Read;
use std::time::{Duration, Instant};

use unify::synth::{GenOptions, GenSource, write_ndjson};
use unify_actors::engine::{Attribute, UnifyKey};
use unify_actors::runtime::{NewChannel, Runtime};
use unify_actors::settings::Settings;
use unify_storage::{ImportStatus, Source, Store};

fn members() -> u64 {
    std::env::var("UNIFY_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Returns a line of `/proc/self/status` in MiB (Linux only).
fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn key(attribute: Attribute, is_distinct: bool) -> UnifyKey {
    UnifyKey {
        attribute,
        is_distinct,
    }
}

async fn run() {
    let n = members();
    let temp = tempfile::tempdir().expect("temp dir");
    let kept = std::env::var_os("UNIFY_BENCH_STORE").map(std::path::PathBuf::from);
    let dir = kept.clone().unwrap_or_else(|| temp.path().to_owned());
    if kept.is_some() && dir.join("store").exists() {
        restart(&dir).await;
        return;
    }
    std::fs::create_dir_all(&dir).expect("store dir");
    let store = Store::open(&dir.join("store")).expect("store opens");
    let mut settings = Settings::default();
    if let Some(chunk) = std::env::var("UNIFY_BENCH_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.import_chunk = chunk;
    }
    let rt = Runtime::start(store, settings)
        .await
        .expect("runtime starts");
    let account = rt.create_account("bench").await.unwrap().id;
    let org = rt
        .create_org(account, Source::Caac, "chat", None)
        .await
        .unwrap()
        .id;
    let mut channels = Vec::new();
    for name in ["line", "fb", "webchat"] {
        let channel = NewChannel {
            name: name.into(),
            channel_type: name.into(),
            ..NewChannel::default()
        };
        channels.push(rt.create_channel(org, channel).await.unwrap().id);
    }
    rt.set_keys(
        org,
        vec![
            key(Attribute::DisplayEmail, false),
            key(Attribute::DisplayMobile, false),
            key(Attribute::CustomId, true),
        ],
    )
    .await
    .unwrap();
    let body_path = temp.path().join("body.ndjson");
    let options = GenOptions {
        members: n,
        seed: 42,
        source: GenSource::Caac,
        channels,
        people: None,
    };
    write_ndjson(&options, std::fs::File::create(&body_path).unwrap()).unwrap();
    let size = std::fs::metadata(&body_path).unwrap().len();
    eprintln!(
        "body: {n} members, {:.0} MiB; RSS before import {:.0} MiB",
        size as f64 / (1 << 20) as f64,
        proc_status_mib("VmRSS:").unwrap_or(0.0)
    );

    let started = Instant::now();
    let mut file = std::fs::File::open(&body_path).unwrap();
    let pieces = futures_util::stream::poll_fn(move |_| {
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf) {
            Ok(0) => std::task::Poll::Ready(None),
            Ok(read) => {
                buf.truncate(read);
                std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(buf)))
            }
            Err(e) => std::task::Poll::Ready(Some(Err(e))),
        }
    });
    let job_id = rt.start_import(org, pieces).await.unwrap();
    let accepted = started.elapsed();
    let mut last_report = Instant::now();
    let job = loop {
        let job = rt.import_status(org, job_id).unwrap();
        if job.status != ImportStatus::Running {
            break job;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "  {:>8} / {} after {:.1?}, RSS {:.0} MiB",
                job.done + job.failed,
                job.total,
                started.elapsed(),
                proc_status_mib("VmRSS:").unwrap_or(0.0)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    assert_eq!(job.status, ImportStatus::Finished, "{job:?}");
    let setting = rt.setting(org).await.unwrap();
    println!(
        "import: {} members ({} refused) in {:.2?} (body spooled and accepted after {:.2?}): \
         {:.0} members/s; peak RSS {:.0} MiB; {} events",
        job.done,
        job.failed,
        elapsed,
        accepted,
        job.done as f64 / elapsed.as_secs_f64(),
        proc_status_mib("VmHWM:").unwrap_or(0.0),
        setting.last_seq,
    );
    rt.shutdown().await.unwrap();
    drop(rt);
    restart(&dir).await;
}

/// P4: restarts on the imported store and waits until every scope actor is running.
async fn restart(dir: &std::path::Path) {
    let started = Instant::now();
    let store = Store::open(&dir.join("store")).expect("store reopens");
    let opened = started.elapsed();
    let rt = Runtime::start(store.clone(), Settings::default())
        .await
        .expect("runtime restarts");
    while !rt.is_ready() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "restart: ready after {:.2?} (store opened after {opened:.2?}) with {} members",
        started.elapsed(),
        rt.scope_statuses()
            .iter()
            .map(|(_, s)| s.members.load(std::sync::atomic::Ordering::Acquire))
            .sum::<u64>()
    );
    rt.shutdown().await.unwrap();
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
