//! A load driver for the crash test (`unify crash-driver`, hidden): it runs the runtime
//! in-process and applies a mixed load as fast as it can (creates, patches, uni,
//! change/cancel unification, deletes, imports, key changes), printing one JSON [`Line`] per
//! attempt and per acknowledged write. On start it first prints the served state (the keys,
//! every member, every import job), then `ready`; with `settle` it waits for the import jobs
//! and re-unification to finish before that and exits after it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use serde::{Deserialize, Serialize};
use unify_actors::engine::{Attribute, UnifyKey};
use unify_actors::ops::{MemberOp, MemberPatch, NewMember};
use unify_actors::runtime::{NewChannel, Runtime};
use unify_storage::{Id, ImportStatus, Member, Source};

use crate::config::Config;
use crate::server;

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
}

/// Prints the state, then runs `writers` concurrent writers until the process is killed.
pub async fn run(config: Config, options: Options) -> anyhow::Result<()> {
    let mut settings = server::settings(&config)?;
    if let Some(bytes) = options.snapshot_min_bytes {
        settings.snapshot_min_bytes = bytes;
    }
    let runtime = Arc::new(server::start_with(&config, settings).await?);
    let (org, channel) = world(&runtime).await?;
    if options.settle {
        settle(&runtime, org).await?;
    }
    let members = print_state(&runtime, org).await?;
    Line::Ready.print();
    if options.settle {
        return Ok(());
    }
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
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Waits until no import job of the org is running (they resume after a restart) and its
/// scope has no pending re-unification, so that the served profiles are final.
async fn settle(runtime: &Runtime, org: Id) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while runtime
        .store()
        .list_import_jobs()?
        .iter()
        .any(|j| j.org_id == org && j.status == ImportStatus::Running)
        || !runtime.scope_merge_state(org)?
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "import jobs or re-unification still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Prints the served keys, members and import jobs; returns the member ids.
async fn print_state(runtime: &Runtime, org: Id) -> anyhow::Result<Vec<Id>> {
    let setting = runtime.setting(org).await?;
    Line::Keys(setting.keys.iter().map(key_name).collect()).print();
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let page = runtime.list_members(org, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for m in page {
            ids.push(m.id);
            Line::Member(m).print();
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

/// Returns the caac org and channel, creating them (with keys) on the first run.
async fn world(runtime: &Runtime) -> anyhow::Result<(Id, Id)> {
    let store = runtime.store();
    if let Some(account) = store.list_accounts()?.first() {
        let org = store
            .orgs_of_account(account.id)?
            .into_iter()
            .find(|o| o.source == Source::Caac)
            .context("driver org missing")?;
        let channel = store
            .channels_of_org(org.id)?
            .first()
            .context("driver channel missing")?
            .id;
        return Ok((org.id, channel));
    }
    let account = runtime.create_account("crash").await?;
    let org = runtime
        .create_org(account.id, Source::Caac, "chat", None)
        .await?;
    let channel = runtime
        .create_channel(
            org.id,
            NewChannel {
                name: "line".into(),
                channel_type: "line".into(),
                ..NewChannel::default()
            },
        )
        .await?;
    let keys: Vec<String> = KEY_SETS[0].iter().map(|k| (*k).to_owned()).collect();
    runtime.set_keys(org.id, unify_keys(&keys)).await?;
    Ok((org.id, channel.id))
}
