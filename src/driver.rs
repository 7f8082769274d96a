//! A load driver for the crash test (`unify crash-driver`, hidden): it runs the runtime
//! in-process and applies a mixed load as fast as it can (creates, patches, uni,
//! change/cancel unification, deletes, imports, key changes, channel webhook events with
//! re-sends), printing one JSON [`Line`] per attempt and per acknowledged write. Its scope is
//! CDH-connected (a caac and a maac org) when a CDH is configured. It prints every event it
//! sees live (see `events`). On start it first prints the served state (the keys, every
//! member, every import job, the replay of the retained events), then `ready`; with `settle`
//! it waits for the import jobs, re-unification, provisioning and CDH delivery to finish
//! before that and exits after it.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use unify_actors::engine::{Attribute, UnifyKey};
use unify_actors::ops::{MemberOp, MemberPatch, NewMember};
use unify_actors::runtime::{NewChannel, Runtime};
use unify_storage::{Id, ImportStatus, Member, Source};

use crate::config::Config;
use crate::server;

mod events;
mod hooks;

/// Key lists the driver switches between; `!` marks the distinct key.
pub const KEY_SETS: [&[&str]; 3] = [
    &["display_email", "custom_id!"],
    &["display_email", "display_mobile"],
    &["custom_id!", "display_mobile", "display_email"],
];

/// Attributes the driver sets with uni and change-unification.
const ATTRIBUTES: [Attribute; 3] = [
    Attribute::DisplayEmail,
    Attribute::DisplayMobile,
    Attribute::CustomId,
];

/// Lines of one import job.
const IMPORT_LINES: u64 = 40;

/// One line of the driver's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// The served key list (state printed on start).
    Keys(Vec<String>),
    /// A served member (state printed on start).
    Member(Member),
    /// A served import job: id, whether it finished, lines done and failed.
    Job {
        job_id: Id,
        finished: bool,
        done: u64,
        failed: u64,
    },
    /// The state is printed; the load starts.
    Ready,
    /// A create of this external member id is about to be sent.
    TryCreate(String),
    /// An acknowledged create.
    Created(Member),
    /// An operation on a member is about to be sent.
    Try { member_id: Id, op: Op },
    /// An acknowledged operation: the member as it replied.
    Acked(Member),
    /// An acknowledged delete.
    Deleted(Id),
    /// A key change is about to be sent.
    TryKeys(Vec<String>),
    /// An acknowledged key change.
    KeysSet(Vec<String>),
    /// An accepted import job: its lines create `<prefix>-<n>` for n in 0..count.
    ImportStarted {
        job_id: Id,
        prefix: String,
        count: u64,
    },
    /// An import job seen finished.
    ImportFinished { job_id: Id, done: u64, failed: u64 },
    /// An event of the scope received live (published after its batch was durable), with
    /// its frame.
    Event { seq: u64, payload: String },
    /// The live subscription fell behind: events before the next one were skipped.
    Lagged,
    /// A retained event, replayed from the store on start (state printed on start).
    Replayed { seq: u64, payload: String },
    /// An event read from the log while the load runs (as a websocket `?since=` replay
    /// would read it).
    Read { seq: u64, payload: String },
    /// The replay is complete: it held every retained event from `oldest` to `newest`
    /// (state printed on start).
    Retained {
        oldest: Option<u64>,
        newest: Option<u64>,
    },
    /// A channel webhook event (from sender `identity`) is about to be sent.
    TryHook { event_id: String, identity: String },
    /// The webhook's answer: `accepted`, `duplicate` or `status <code>`.
    Hooked { event_id: String, answer: String },
    /// The member provisioned by an accepted webhook event, first seen.
    Provisioned(Member),
}

impl Line {
    fn print(&self) {
        println!("{}", serde_json::to_string(self).expect("lines encode"));
    }
}

/// An operation on one member, as the driver prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Patch {
        display_name: String,
    },
    Uni {
        attribute: String,
        value: Option<String>,
    },
    Change {
        attribute: String,
        value: String,
    },
    Cancel,
    Delete,
}

impl Op {
    /// Returns the runtime operation.
    pub fn member_op(&self) -> MemberOp {
        let attribute = |name: &str| name.parse::<Attribute>().expect("driver attribute");
        match self {
            Op::Patch { display_name } => MemberOp::Patch(MemberPatch {
                display_name: Some(Some(display_name.clone())),
                ..MemberPatch::default()
            }),
            Op::Uni {
                attribute: a,
                value,
            } => MemberOp::Uni {
                attribute: attribute(a),
                value: value.clone(),
            },
            Op::Change {
                attribute: a,
                value,
            } => MemberOp::ChangeUnification {
                attribute: attribute(a),
                value: value.clone(),
            },
            Op::Cancel => MemberOp::CancelUnification,
            Op::Delete => MemberOp::Delete,
        }
    }
}

/// Returns the unify keys of a key list of [`KEY_SETS`].
pub fn unify_keys(names: &[String]) -> Vec<UnifyKey> {
    names
        .iter()
        .map(|n| UnifyKey {
            attribute: n.trim_end_matches('!').parse().expect("driver key"),
            is_distinct: n.ends_with('!'),
        })
        .collect()
}

/// How the driver runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub writers: usize,
    /// Overrides the journal bytes after which a snapshot is written.
    pub snapshot_min_bytes: Option<u64>,
    /// Waits for the import jobs, prints the state and exits instead of writing.
    pub settle: bool,
    /// Overrides `events.retain`, so that a short run already trims the event log.
    pub events_retain: Option<u64>,
    /// Overrides the first CDH retry delay (the cap is ten times it).
    pub cdh_retry_ms: Option<u64>,
}

/// Prints the state, then runs `writers` concurrent writers until the process is killed.
pub async fn run(config: Config, options: Options) -> anyhow::Result<()> {
    let mut settings = server::settings(&config)?;
    if let Some(bytes) = options.snapshot_min_bytes {
        settings.snapshot_min_bytes = bytes;
    }
    if let Some(retain) = options.events_retain {
        settings.events_retain = retain;
    }
    if let (Some(ms), Some(cdh)) = (options.cdh_retry_ms, settings.cdh.as_mut()) {
        cdh.retry_base = Duration::from_millis(ms);
        cdh.retry_max = Duration::from_millis(ms * 10);
    }
    let runtime = Arc::new(server::start_with(&config, settings).await?);
    let World { org, channel } = world(&runtime).await?;
    let scope = runtime.scope_of(org)?;
    // Subscribed before the replay is read, so that replay and live events meet.
    events::print_live(runtime.hub().subscribe(scope));
    if options.settle {
        settle(&runtime, org, scope).await?;
    }
    let served = print_state(&runtime, org).await?;
    let replayed = events::print_replay(runtime.event_log(), scope).await?;
    Line::Ready.print();
    if options.settle {
        return Ok(());
    }
    events::follow(runtime.event_log().clone(), scope, replayed);
    let members: Vec<Id> = served.iter().map(|m| m.id).collect();
    let run: u32 = rand::rng().random();
    let writers = options.writers.max(1);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let runtime = runtime.clone();
        let mine: Vec<Id> = members
            .iter()
            .copied()
            .filter(|id| *id as usize % writers == w)
            .collect();
        let writer = Writer {
            runtime,
            org,
            channel,
            name: format!("r{run:08x}-w{w}"),
            members: mine,
        };
        tasks.push(tokio::spawn(writer.run(w == 0)));
    }
    let hooks = hooks::Hooks::new(&config, runtime.clone(), org, channel, run, &served)?;
    tasks.push(tokio::spawn(hooks.run()));
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Waits until no import job of the org is running (they resume after a restart), its
/// scope has no pending re-unification, no accepted channel event waits for provisioning
/// and the CDH outbox is empty, so that the served profiles are final and every event is
/// delivered.
async fn settle(runtime: &Runtime, org: Id, scope: Id) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let store = runtime.store();
    let busy = || -> anyhow::Result<bool> {
        let importing = store
            .list_import_jobs()?
            .iter()
            .any(|j| j.org_id == org && j.status == ImportStatus::Running);
        let provisioning = store
            .scan_accepted_events()
            .collect::<Result<Vec<_>, _>>()?
            .iter()
            .any(|e| e.pending.is_some());
        Ok(importing
            || provisioning
            || !runtime.scope_merge_state(org)?
            || store.outbox_len(scope)? > 0)
    };
    while busy()? {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "import jobs, re-unification, provisioning or cdh delivery still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Prints the served keys, members and import jobs; returns the members.
async fn print_state(runtime: &Runtime, org: Id) -> anyhow::Result<Vec<Member>> {
    let setting = runtime.setting(org).await?;
    Line::Keys(setting.keys.iter().map(key_name).collect()).print();
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let page = runtime.list_members(org, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for m in page {
            Line::Member(m.clone()).print();
            ids.push(m);
        }
    }
    for job in runtime.store().list_import_jobs()? {
        if job.org_id == org {
            Line::Job {
                job_id: job.id,
                finished: job.status == ImportStatus::Finished,
                done: job.done,
                failed: job.failed,
            }
            .print();
        }
    }
    Ok(ids)
}

fn key_name(key: &unify_storage::UnifyKeyRecord) -> String {
    let mark = if key.is_distinct { "!" } else { "" };
    format!("{}{mark}", key.attribute)
}

/// One writer: creates members and operates on its own ones, one request at a time, so that
/// at most one operation per member is ever in flight.
struct Writer {
    runtime: Arc<Runtime>,
    org: Id,
    channel: Id,
    name: String,
    /// Live members this writer operates on.
    members: Vec<Id>,
}

impl Writer {
    async fn run(mut self, imports_and_keys: bool) -> anyhow::Result<()> {
        for i in 0u64.. {
            let roll = rand::rng().random_range(0..100);
            match roll {
                0..=2 if imports_and_keys => self.import(i).await?,
                3..=4 if imports_and_keys => self.change_keys(i).await,
                _ if self.members.len() < 4 || roll < 35 => self.create(i).await,
                _ => self.operate(i, roll).await,
            }
        }
        Ok(())
    }

    async fn create(&mut self, i: u64) {
        let ext = format!("{}-{i}", self.name);
        let member = NewMember {
            channel_id: Some(self.channel),
            external_member_id: ext.clone(),
            display_name: Some(format!("n{i}")),
            display_email: Some(format!("p{}@x.com", i % 50)),
            ..NewMember::default()
        };
        Line::TryCreate(ext).print();
        if let Ok((m, _)) = self.runtime.create_member(self.org, member).await {
            self.members.push(m.id);
            Line::Created(m).print();
        }
    }

    async fn operate(&mut self, i: u64, roll: u32) {
        let at = rand::rng().random_range(0..self.members.len());
        let member_id = self.members[at];
        let attribute = ATTRIBUTES[i as usize % ATTRIBUTES.len()]
            .as_str()
            .to_owned();
        let op = match roll {
            35..=54 => Op::Patch {
                display_name: format!("{}-{i}", self.name),
            },
            55..=69 => Op::Uni {
                value: (!i.is_multiple_of(4)).then(|| format!("u{}", i % 30)),
                attribute,
            },
            70..=81 => Op::Change {
                value: format!("c{}", i % 20),
                attribute,
            },
            82..=89 => Op::Cancel,
            _ => Op::Delete,
        };
        Line::Try {
            member_id,
            op: op.clone(),
        }
        .print();
        match self
            .runtime
            .member_op(self.org, member_id, op.member_op())
            .await
        {
            Ok(Some(m)) => Line::Acked(m).print(),
            Ok(None) => {
                self.members.swap_remove(at);
                Line::Deleted(member_id).print();
            }
            // Whether it landed is unknown: leave the member alone for the rest of this run.
            Err(_) => {
                self.members.swap_remove(at);
            }
        }
    }

    async fn change_keys(&mut self, i: u64) {
        let keys: Vec<String> = KEY_SETS[i as usize % KEY_SETS.len()]
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        Line::TryKeys(keys.clone()).print();
        if self
            .runtime
            .set_keys(self.org, unify_keys(&keys))
            .await
            .is_ok()
        {
            Line::KeysSet(keys).print();
        }
    }

    /// Starts an import job and waits for it to finish.
    async fn import(&mut self, i: u64) -> anyhow::Result<()> {
        let prefix = format!("imp-{}-{i}", self.name);
        let body: String = (0..IMPORT_LINES)
            .map(|n| {
                format!(
                    "{{\"channel_id\": {}, \"external_member_id\": \"{prefix}-{n}\", \
                     \"display_email\": \"p{}@x.com\"}}\n",
                    self.channel,
                    n % 50
                )
            })
            .collect();
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(body.into_bytes())]);
        let Ok(job_id) = self.runtime.start_import(self.org, stream).await else {
            return Ok(());
        };
        Line::ImportStarted {
            job_id,
            prefix,
            count: IMPORT_LINES,
        }
        .print();
        loop {
            let job = self.runtime.import_status(self.org, job_id)?;
            if job.status != ImportStatus::Running {
                anyhow::ensure!(job.status == ImportStatus::Finished, "import job failed");
                Line::ImportFinished {
                    job_id,
                    done: job.done,
                    failed: job.failed,
                }
                .print();
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// What the driver writes to: the caac org and its channel.
struct World {
    org: Id,
    channel: Id,
}

/// The tenant of the driver's channel (auto-provisioning needs one).
const TENANT: &str = "t-crash";

/// Returns the caac org and channel. On the first run it creates them with the first key list
/// and, when a CDH is configured, a maac org and integrates them; each step is skipped when a
/// previous run made it.
async fn world(runtime: &Runtime) -> anyhow::Result<World> {
    let store = runtime.store();
    let account = match store.list_accounts()?.first() {
        Some(account) => account.clone(),
        None => runtime.create_account("crash").await?,
    };
    let orgs = store.orgs_of_account(account.id)?;
    let of_source = |source: Source| orgs.iter().find(|o| o.source == source).cloned();
    let org = match of_source(Source::Caac) {
        Some(org) => org,
        None => {
            let org = runtime
                .create_org(account.id, Source::Caac, "chat", None)
                .await?;
            let keys: Vec<String> = KEY_SETS[0].iter().map(|k| (*k).to_owned()).collect();
            runtime.set_keys(org.id, unify_keys(&keys)).await?;
            org
        }
    };
    let channel = match store.channels_of_org(org.id)?.first() {
        Some(channel) => channel.id,
        None => {
            let new = NewChannel {
                name: "line".into(),
                channel_type: "line".into(),
                tenant_key: Some(TENANT.into()),
                auto_provision: true,
                contact_api: None,
            };
            runtime.create_channel(org.id, new).await?.id
        }
    };
    if runtime.settings().cdh.is_some() {
        if of_source(Source::Maac).is_none() {
            runtime
                .create_org(account.id, Source::Maac, "marketing", None)
                .await?;
        }
        if store.get_scope(org.scope_id)?.org_ids.len() < 2 {
            let keys = runtime.setting(org.id).await?.keys;
            let names: Vec<String> = keys.iter().map(key_name).collect();
            runtime.integrate(account.id, unify_keys(&names)).await?;
        }
    }
    Ok(World {
        org: org.id,
        channel,
    })
}
