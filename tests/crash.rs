//! The binary under `kill -9`: every acknowledged write survives, and `unify verify` passes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use unify_storage::{MemberLog, Store};

const BIN: &str = env!("CARGO_BIN_EXE_unify");

/// Acknowledged writes: member id → (external id, custom id set by an acknowledged change).
type Acks = HashMap<u64, (String, Option<String>)>;

/// Runs the driver until it has acknowledged `writes` more writes, then kills it with SIGKILL.
fn run_and_kill(dir: &Path, writes: usize, acks: &mut Acks) {
    let mut child = Command::new(BIN)
        .args(["crash-driver", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("driver starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while seen < writes {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the driver keeps acknowledging writes");
        record(&line, acks);
        seen += usize::from(line != "ready");
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    // Lines already printed before the kill were acknowledged too.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        record(&line, acks);
    }
}

fn record(line: &str, acks: &mut Acks) {
    let parts: Vec<&str> = line.split(' ').collect();
    match parts.as_slice() {
        ["create", id, ext] => {
            acks.entry(id.parse().unwrap())
                .or_insert(((*ext).to_owned(), None));
        }
        ["change", id, value] => {
            acks.get_mut(&id.parse().unwrap())
                .expect("changed after create")
                .1 = Some((*value).to_owned());
        }
        ["ready"] => {}
        other => panic!("unexpected driver output {other:?}"),
    }
}

#[test]
fn acknowledged_writes_survive_repeated_sigkill_and_verify_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut acks = Acks::new();
    for round in 0..4 {
        run_and_kill(dir.path(), 150 + 50 * round, &mut acks);
    }
    let verify = Command::new(BIN)
        .args(["verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "unify verify failed:\n{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut stored = std::collections::BTreeMap::new();
    for org in store.list_orgs().unwrap() {
        stored.extend(store.read_org(org.id).unwrap().replay().unwrap());
    }
    for (id, (ext, custom_id)) in &acks {
        let member = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged member {id} lost"))
            .member()
            .unwrap();
        assert_eq!(&member.external_member_id, ext);
        if let Some(value) = custom_id {
            assert_eq!(
                member.custom_id.as_ref(),
                Some(value),
                "acknowledged change of {id}"
            );
            assert!(member.manual_unification);
        }
    }
    assert!(acks.len() > 500, "{} acknowledged members", acks.len());
}

#[test]
fn serve_shuts_down_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("unify started"));
    assert!(started, "serve logs that it started");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(lines.map_while(Result::ok).any(|l| l.contains("stopped")));
    assert!(child.wait().unwrap().success(), "exit 0 after SIGTERM");
    assert!(dir.path().join("store").exists());
}
