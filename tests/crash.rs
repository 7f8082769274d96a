//! The binary under `kill -9`: 30 rounds of a mixed load (creates, patches, uni,
//! change/cancel unification, deletes, imports, key changes, channel webhook events and their
//! re-sends) on a CDH-connected scope, killed after a number of acknowledged writes, during
//! start-up and while a snapshot is written. Every start prints the served state, which is
//! checked against a model of the acknowledged writes, and the replay of the retained events,
//! which must hold every event seen before (live or by the stand-in CDH) that is still
//! retained, with its payload. Live events come in seq order without gaps; a seq never
//! changes its payload; the CDH receives the events in order, a redelivery only as first sent,
//! and at the end every event seen live; an accepted webhook event is a duplicate ever after
//! and provisions one member once. At the end `unify verify` passes and the store holds
//! exactly the modelled members.

#[path = "crash/cdh.rs"]
mod cdh;
#[path = "common/mod.rs"]
mod common;
#[path = "crash/events.rs"]
mod events;
#[path = "crash/hooks.rs"]
mod hooks;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use unify::driver::{KEY_SETS, Line, Op, unify_keys};
use unify_actors::engine::{KeySet, Unifier};
use unify_storage::{Id, Member, MemberLog, Store};

const BIN: &str = env!("CARGO_BIN_EXE_unify");

/// Journal bytes after which the driver writes a snapshot: a few hundred operations.
const SNAPSHOT_MIN_BYTES: &str = "65536";

/// Events the driver retains per scope: the log is trimmed within a few rounds.
const EVENTS_RETAIN: &str = "4000";

/// How long anything the test waits for may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(120);

/// What a round waits for before it kills the driver.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// After this many acknowledged writes.
    AfterAcks(usize),
    /// This fraction of the last measured start-up time after the spawn.
    DuringStartup(f64),
    /// This many milliseconds after a snapshot started.
    DuringSnapshot(u64),
}

enum Out {
    Line(Box<Line>),
    Log(String),
    Closed,
}

/// A member as the acknowledged writes leave it.
#[derive(Debug, Clone)]
struct Modelled {
    /// `None` once an acknowledged delete removed it.
    member: Option<Member>,
    /// An operation sent and not acknowledged: it may or may not have been applied.
    pending: Option<Op>,
}

/// An accepted import job.
#[derive(Debug, Clone)]
struct Import {
    prefix: String,
    count: u64,
    finished: bool,
}

/// The acknowledged state and what un-acknowledged attempts allow besides.
#[derive(Default)]
struct Model {
    members: HashMap<Id, Modelled>,
    /// Every member id ever seen, with its external member id: ids are never reused.
    ids: HashMap<Id, String>,
    /// External member ids of every create attempted.
    tried: HashSet<String>,
    keys: Vec<String>,
    /// Key lists sent since the last acknowledged one.
    tried_keys: Vec<Vec<String>>,
    imports: HashMap<Id, Import>,
    /// Counts of acknowledged writes by kind.
    acks: HashMap<&'static str, usize>,
    /// The scope's events seen so far.
    events: events::Events,
    /// The webhook events sent.
    hooks: hooks::Hooks,
    /// The member id of every webhook sender provisioned.
    provisioned: HashMap<String, Id>,
    /// The round under way.
    round: u64,
}

impl Model {
    /// Applies one line of a write; returns whether it was an acknowledgement.
    fn write(&mut self, line: Line) -> bool {
        let kind = match line {
            Line::TryCreate(ext) => {
                self.tried.insert(ext);
                return false;
            }
            Line::Created(m) => {
                self.acknowledged(m);
                "create"
            }
            Line::Try { member_id, op } => {
                let state = self.live(member_id);
                state.pending = Some(op);
                return false;
            }
            Line::Acked(m) => {
                let state = self.live(m.id);
                let kind = match state.pending.take() {
                    Some(Op::Patch { .. }) => "patch",
                    Some(Op::Uni { .. }) => "uni",
                    Some(Op::Change { .. }) => "change",
                    Some(Op::Cancel) => "cancel",
                    other => panic!("member {} acknowledged after {other:?}", m.id),
                };
                state.member = Some(m);
                kind
            }
            Line::Deleted(id) => {
                let state = self.live(id);
                assert_eq!(state.pending.take(), Some(Op::Delete));
                state.member = None;
                "delete"
            }
            Line::TryKeys(keys) => {
                self.tried_keys.push(keys);
                return false;
            }
            Line::KeysSet(keys) => {
                self.keys = keys;
                self.tried_keys.clear();
                "keys"
            }
            Line::ImportStarted {
                job_id,
                prefix,
                count,
            } => {
                let import = Import {
                    prefix,
                    count,
                    finished: false,
                };
                assert!(
                    self.imports.insert(job_id, import).is_none(),
                    "job id reused"
                );
                "import started"
            }
            Line::ImportFinished {
                job_id,
                done,
                failed,
            } => {
                let import = self.imports.get_mut(&job_id).expect("finished after start");
                assert_eq!((done, failed), (import.count, 0), "import job {job_id}");
                import.finished = true;
                "import finished"
            }
            Line::TryHook { event_id, identity } => {
                self.hooks.tried(event_id, identity);
                return false;
            }
            Line::Hooked { event_id, answer } => {
                match self.hooks.answered(&event_id, &answer, self.round) {
                    Some(kind) => kind,
                    None => return false,
                }
            }
            Line::Provisioned(m) => {
                assert!(
                    self.hooks.is_sender(&m.external_member_id),
                    "member {} provisioned for no event",
                    m.id
                );
                self.acknowledged(m);
                "provisioned"
            }
            line @ (Line::Event { .. } | Line::Lagged | Line::Read { .. }) => {
                self.event(line);
                return false;
            }
            other => panic!("state line {other:?} after ready"),
        };
        *self.acks.entry(kind).or_default() += 1;
        true
    }

    /// Models a member whose creation was acknowledged.
    fn acknowledged(&mut self, m: Member) {
        self.adopt(&m);
        let state = Modelled {
            member: Some(m),
            pending: None,
        };
        self.members
            .insert(state.member.as_ref().unwrap().id, state);
    }

    fn live(&mut self, id: Id) -> &mut Modelled {
        let state = self
            .members
            .get_mut(&id)
            .expect("the driver knows the member");
        assert!(state.member.is_some(), "operation on deleted member {id}");
        state
    }

    /// Records a member id seen for the first time; panics if the id was seen before, or if
    /// it is a webhook sender's and the sender had a member before.
    fn adopt(&mut self, m: &Member) {
        let before = self.ids.insert(m.id, m.external_member_id.clone());
        assert!(before.is_none(), "member id {} reused ({before:?})", m.id);
        if self.hooks.is_sender(&m.external_member_id) {
            let before = self.provisioned.insert(m.external_member_id.clone(), m.id);
            assert!(
                before.is_none(),
                "sender {} provisioned twice: members {before:?} and {}",
                m.external_member_id,
                m.id
            );
        }
    }

    /// Handles a live event line.
    fn event(&mut self, line: Line) {
        match line {
            Line::Event { seq, payload } => self.events.live(seq, &payload),
            Line::Lagged => self.events.lagged(),
            Line::Read { seq, payload } => self.events.read(seq, &payload),
            other => panic!("not an event line: {other:?}"),
        }
    }

    /// Checks the state a driver served on start against the model, then takes it as the
    /// model (it settles whether the pending operations were applied).
    fn served(&mut self, state: Vec<Line>, settled: bool) {
        let mut served = HashMap::new();
        let mut jobs = HashMap::new();
        let mut replay = Vec::new();
        let mut retained = None;
        for line in state {
            match line {
                Line::Keys(keys) => {
                    assert!(
                        keys == self.keys || self.tried_keys.contains(&keys),
                        "served keys {keys:?}, acknowledged {:?}, tried {:?}",
                        self.keys,
                        self.tried_keys
                    );
                    self.keys = keys;
                    self.tried_keys.clear();
                }
                Line::Member(m) => {
                    served.insert(m.id, m);
                }
                Line::Job {
                    job_id,
                    finished,
                    done,
                    failed,
                } => {
                    jobs.insert(job_id, (finished, done, failed));
                }
                Line::Replayed { seq, payload } => replay.push((seq, payload)),
                Line::Retained { oldest, newest } => retained = Some((oldest, newest)),
                other => panic!("unexpected state line {other:?}"),
            }
        }
        let (oldest, newest) = retained.expect("the state ends with the replay's bounds");
        self.events.replay(replay, oldest, newest);
        for (id, state) in &mut self.members {
            let now = served.remove(id);
            match (&state.member, &now) {
                (None, None) => {}
                (None, Some(m)) => panic!("deleted member {id} is served again: {m:?}"),
                (Some(acked), None) => assert_eq!(
                    state.pending,
                    Some(Op::Delete),
                    "acknowledged member {id} lost: {acked:?}"
                ),
                (Some(acked), Some(m)) => assert!(
                    same(acked, m) || may_follow(acked, state.pending.as_ref(), m),
                    "member {id}: served {m:?}, acknowledged {acked:?}, pending {:?}",
                    state.pending
                ),
            }
            state.member = now;
            state.pending = None;
        }
        // What remains was created by a create not acknowledged, or by an import.
        let mut seen: HashSet<String> = self.ids.values().cloned().collect();
        for (id, m) in served {
            let ext = &m.external_member_id;
            assert!(
                self.tried.contains(ext) || ext.starts_with("imp-") || self.hooks.is_sender(ext),
                "member {id} ({ext}) was never written"
            );
            self.adopt(&m);
            seen.insert(ext.clone());
            let state = Modelled {
                member: Some(m),
                pending: None,
            };
            self.members.insert(id, state);
        }
        for (job_id, import) in &self.imports {
            let (finished, done, failed) = *jobs
                .get(job_id)
                .unwrap_or_else(|| panic!("accepted import job {job_id} lost"));
            if import.finished || settled {
                assert!(finished, "import job {job_id} finished");
                assert_eq!((done, failed), (import.count, 0), "import job {job_id}");
                for n in 0..import.count {
                    let ext = format!("{}-{n}", import.prefix);
                    assert!(seen.contains(&ext), "imported member {ext} lost");
                }
            }
        }
    }
}

/// The members in a printed state.
fn served_members(state: &[Line]) -> Vec<Member> {
    state
        .iter()
        .filter_map(|l| match l {
            Line::Member(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Checks that the served profile ids are those of a full rebuild of the served members
/// under the served keys (with the configuration the driver loads, from the same directory).
fn assert_profiles_rebuild(served: &[Member], keys: &[String]) {
    let overrides = unify::config::Overrides {
        listen: None,
        data_dir: None,
    };
    let config = unify::config::Config::load(None, &overrides).unwrap();
    let normalizer = config.normalizer().unwrap();
    let keys = KeySet::new(unify_keys(keys)).unwrap();
    let links = served
        .iter()
        .map(|m| (m.id, unify_actors::links::member_links(&normalizer, m)));
    let full = Unifier::from_members(keys, config.limits(), links);
    let profiles: HashSet<Id> = served.iter().map(|m| m.profile_id).collect();
    for m in served {
        assert_eq!(
            Some(m.profile_id),
            full.profile_of(m.id),
            "served profile of member {}",
            m.id
        );
    }
    assert!(
        profiles.len() < served.len(),
        "some members are unified ({} profiles of {} members)",
        profiles.len(),
        served.len()
    );
}

/// Whether two records of a member agree (profile ids are derived and may move).
fn same(a: &Member, b: &Member) -> bool {
    let mut a = a.clone();
    a.profile_id = b.profile_id;
    &a == b
}

/// Whether `now` is `acked` with the pending operation applied (under any key list the
/// driver uses: cancel clears the key attributes of the keys in force).
fn may_follow(acked: &Member, pending: Option<&Op>, now: &Member) -> bool {
    let Some(op) = pending else { return false };
    KEY_SETS.iter().any(|names| {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let keys = KeySet::new(unify_keys(&names)).unwrap();
        let mut m = acked.clone();
        unify_actors::ops::apply(&mut m, &op.member_op(), &keys, now.updated_at).is_ok()
            && m.updated_at == now.updated_at
            && same(&m, now)
    })
}

/// One driver process and what it printed.
struct Driver {
    child: Child,
    rx: mpsc::Receiver<Out>,
    open: usize,
    spawned: Instant,
}

impl Driver {
    fn spawn(dir: &Path, cdh_url: &str, settle: bool) -> Driver {
        let mut cmd = Command::new(BIN);
        cmd.args(["crash-driver", "--snapshot-min-bytes", SNAPSHOT_MIN_BYTES])
            .args(["--events-retain", EVENTS_RETAIN, "--cdh-retry-ms", "20"])
            .arg("--data-dir")
            .arg(dir)
            .env("UNIFY_CDH_URL", cdh_url)
            .env("UNIFY_CDH_TOKEN", cdh::TOKEN)
            .env("RUST_LOG", "warn,unify_actors::scope=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if settle {
            cmd.arg("--settle");
        }
        let mut child = cmd.spawn().expect("driver starts");
        let (tx, rx) = mpsc::channel();
        pump(child.stdout.take().unwrap(), tx.clone(), |l| {
            Out::Line(Box::new(
                serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}")),
            ))
        });
        pump(child.stderr.take().unwrap(), tx, Out::Log);
        Driver {
            child,
            rx,
            open: 2,
            spawned: Instant::now(),
        }
    }

    /// Returns the next output; `None` once both streams are closed.
    fn next(&mut self) -> Option<Out> {
        while self.open > 0 {
            match self
                .rx
                .recv_timeout(PATIENCE)
                .expect("the driver keeps going")
            {
                Out::Closed => self.open -= 1,
                out => return Some(out),
            }
        }
        None
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

fn pump(
    stream: impl Read + Send + 'static,
    tx: mpsc::Sender<Out>,
    wrap: impl Fn(String) -> Out + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        // A line cut short by the kill was never printed whole: it is dropped.
        while stream
            .read_line(&mut line)
            .is_ok_and(|_| line.ends_with('\n'))
        {
            line.pop();
            if tx.send(wrap(std::mem::take(&mut line))).is_err() {
                return;
            }
        }
        let _ = tx.send(Out::Closed);
    });
}

/// What one round observed.
#[derive(Default)]
struct Round {
    /// Time from spawn to `ready`, when it was reached.
    ready_after: Option<Duration>,
    /// `(org, upto)` of a snapshot that started and was not seen written.
    snapshot: Option<(Id, u64)>,
}

impl Round {
    /// Handles one output of the driver; returns whether it was an acknowledged write.
    fn take(
        &mut self,
        out: Out,
        model: &mut Model,
        state: &mut Vec<Line>,
        spawned: Instant,
    ) -> bool {
        let out = match out {
            Out::Line(line) => *line,
            Out::Log(log) => {
                self.log(&log);
                return false;
            }
            Out::Closed => unreachable!(),
        };
        match out {
            Line::Ready => {
                self.ready_after = Some(spawned.elapsed());
                model.served(std::mem::take(state), false);
                false
            }
            line @ (Line::Keys(_)
            | Line::Member(_)
            | Line::Job { .. }
            | Line::Replayed { .. }
            | Line::Retained { .. }) => {
                state.push(line);
                false
            }
            line => model.write(line),
        }
    }

    /// Follows the snapshot log lines; a logged error or panic fails the test.
    fn log(&mut self, log: &str) {
        if log.contains("snapshot started") {
            self.snapshot = Some((field(log, "org_id"), field(log, "upto")));
        } else if log.contains("snapshot written") {
            self.snapshot = None;
        } else if log.contains("ERROR") || log.contains("panicked") {
            panic!("driver: {log}");
        }
    }
}

fn field(log: &str, name: &str) -> u64 {
    let prefix = format!("{name}=");
    log.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {log}"))
}

/// Runs one driver until `kill` says, kills it with SIGKILL and reads what it printed before.
fn round(dir: &Path, cdh_url: &str, kill: Kill, startup: Duration, model: &mut Model) -> Round {
    model.events.new_run();
    let mut driver = Driver::spawn(dir, cdh_url, false);
    let mut round = Round::default();
    let mut state = Vec::new();
    let spawned = driver.spawned;
    match kill {
        Kill::DuringStartup(fraction) => std::thread::sleep(startup.mul_f64(fraction)),
        Kill::AfterAcks(n) => {
            let mut acks = 0;
            while acks < n {
                let out = driver.next().expect("the driver runs until killed");
                acks += usize::from(round.take(out, model, &mut state, spawned));
            }
        }
        Kill::DuringSnapshot(delay) => {
            while round.ready_after.is_none() || round.snapshot.is_none() {
                let out = driver.next().expect("the driver runs until killed");
                round.take(out, model, &mut state, spawned);
            }
            std::thread::sleep(Duration::from_millis(delay));
        }
    }
    driver.kill();
    // Lines printed before the kill were acknowledged too.
    while let Some(out) = driver.next() {
        round.take(out, model, &mut state, spawned);
    }
    round
}

#[test]
fn acknowledged_writes_survive_30_rounds_of_sigkill_under_mixed_load() {
    let dir = tempfile::tempdir().unwrap();
    // The driver sets the first key list before its first `ready`.
    let mut model = Model {
        keys: KEY_SETS[0].iter().map(|k| (*k).to_owned()).collect(),
        ..Model::default()
    };
    model.events.retain = EVENTS_RETAIN.parse().unwrap();
    let cdh = cdh::StandIn::start();
    let mut deliveries = cdh::Deliveries::default();
    let mut startup = Duration::from_millis(300);
    let (mut startup_kills, mut snapshot_kills) = (0, 0);
    for r in 0..30u64 {
        model.round = r;
        let kill = match r % 4 {
            _ if r == 0 => Kill::AfterAcks(300),
            1 => Kill::DuringStartup([0.1, 0.5, 0.9, 0.3, 0.7, 0.05, 0.6, 0.4][r as usize / 4]),
            3 => Kill::DuringSnapshot([0, 1, 3, 0, 6, 2, 0, 10][r as usize / 4]),
            _ => Kill::AfterAcks(100 + (r as usize * 71) % 250),
        };
        let seen = round(dir.path(), &cdh.url, kill, startup, &mut model);
        deliveries.check(cdh.take(), &mut model.events);
        match (seen.ready_after, kill) {
            (None, _) => startup_kills += 1,
            // Measured only where the test read the output as it came.
            (Some(after), Kill::AfterAcks(_) | Kill::DuringSnapshot(_)) => startup = after,
            (Some(_), Kill::DuringStartup(_)) => {}
        }
        if let Some((org, upto)) = seen.snapshot {
            // Started and not seen written: did the kill land before its manifest?
            let store = Store::open(&dir.path().join("store")).unwrap();
            let installed = store.snapshot_manifest(org).unwrap().map_or(0, |m| m.upto);
            snapshot_kills += usize::from(installed < upto);
        }
        eprintln!("round {r}: {kill:?} ready after {:?}", seen.ready_after);
    }
    model.round = 30;
    model.events.new_run();
    let mut settle = Driver::spawn(dir.path(), &cdh.url, true);
    let mut state = Vec::new();
    let mut ready = false;
    while let Some(out) = settle.next() {
        match out {
            Out::Line(line) if *line == Line::Ready => ready = true,
            Out::Line(line) if matches!(*line, Line::Event { .. } | Line::Lagged) => {
                model.event(*line)
            }
            Out::Line(line) => state.push(*line),
            Out::Log(log) => assert!(!log.contains("ERROR"), "driver: {log}"),
            Out::Closed => unreachable!(),
        }
    }
    assert!(
        settle.child.wait().unwrap().success(),
        "the settling driver exits 0"
    );
    assert!(ready, "the settling driver printed its state");
    let served = served_members(&state);
    model.served(state, true);
    assert_profiles_rebuild(&served, &model.keys);
    // The settling driver waited for the outbox to drain.
    deliveries.check(cdh.take(), &mut model.events);
    let undelivered: Vec<u64> = model
        .events
        .live
        .difference(&deliveries.delivered)
        .copied()
        .collect();
    assert!(
        undelivered.is_empty(),
        "{} events seen live never reached the cdh: {:?}",
        undelivered.len(),
        &undelivered[..undelivered.len().min(20)]
    );
    for sender in model.hooks.accepted_senders() {
        assert!(
            model.provisioned.contains_key(sender),
            "the accepted event of {sender} was never provisioned"
        );
    }

    common::assert_verifies(dir.path());
    // The store holds exactly the served (and modelled) members.
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut stored = HashMap::new();
    for org in store.list_orgs().unwrap() {
        for (id, m) in store.read_org(org.id).unwrap().replay().unwrap() {
            stored.insert(id, m.member().unwrap());
        }
    }
    let modelled: HashMap<Id, &Member> = model
        .members
        .iter()
        .filter_map(|(id, s)| s.member.as_ref().map(|m| (*id, m)))
        .collect();
    assert_eq!(stored.len(), modelled.len());
    for (id, m) in &modelled {
        assert!(
            same(m, &stored[id]),
            "member {id} stored as {:?}",
            stored[id]
        );
    }

    eprintln!(
        "acknowledged {:?}; kills during start-up {startup_kills}, during snapshots {snapshot_kills}",
        model.acks
    );
    let events = &model.events;
    eprintln!(
        "events: {} live ({} lags), {} replayed, {} read, oldest retained {}; \
         cdh: {} batches, {} resent ({} after a crash), {} events delivered; \
         webhooks: {} duplicates, {} after a kill",
        events.live.len(),
        events.lagged,
        events.replayed,
        events.read,
        events.max_oldest,
        deliveries.batches,
        deliveries.redeliveries,
        deliveries.redeliveries_after_crash,
        deliveries.delivered.len(),
        model.hooks.duplicates,
        model.hooks.duplicates_after_kill
    );
    assert!(events.max_oldest > 1, "the event log was never trimmed");
    assert!(
        deliveries.redeliveries_after_crash > 0,
        "no delivered cdh batch was resent after a kill"
    );
    assert!(
        model.hooks.duplicates_after_kill > 0,
        "no event accepted before a kill was re-sent after it"
    );
    for kind in [
        "create",
        "patch",
        "uni",
        "change",
        "cancel",
        "delete",
        "keys",
        "hook accepted",
        "hook duplicate",
        "provisioned",
    ] {
        assert!(
            model.acks.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} acknowledged"
        );
    }
    assert!(model.acks["import finished"] > 0, "no import finished");
    assert!(model.acks["create"] > 500, "{:?}", model.acks);
    assert!(
        startup_kills >= 3,
        "{startup_kills} kills landed during start-up"
    );
    assert!(
        snapshot_kills >= 3,
        "{snapshot_kills} kills landed during snapshots"
    );
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
