//! A load driver for the crash test (`unify crash-driver`, hidden): it runs the runtime
//! in-process and writes members as fast as it can, printing one line per acknowledged write:
//! `create <member_id> <external_member_id>` or `change <member_id> <custom_id>`.

use std::sync::Arc;

use anyhow::Context;
use rand::Rng;
use unify_actors::engine::{Attribute, UnifyKey};
use unify_actors::ops::{MemberOp, NewMember};
use unify_actors::runtime::{NewChannel, Runtime};
use unify_storage::{Id, Source};

use crate::config::Config;
use crate::server;

/// Runs `writers` concurrent writers until the process is killed.
pub async fn run(config: Config, writers: usize) -> anyhow::Result<()> {
    let runtime = Arc::new(server::start(&config).await?);
    let (org, channel) = world(&runtime).await?;
    println!("ready");
    let run: u32 = rand::rng().random();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let ext = format!("r{run:08x}-w{w}-{i}");
                let member = NewMember {
                    channel_id: Some(channel),
                    external_member_id: ext.clone(),
                    display_email: Some(format!("p{}@x.com", i % 50)),
                    ..NewMember::default()
                };
                let Ok((m, _)) = runtime.create_member(org, member).await else {
                    continue;
                };
                println!("create {} {ext}", m.id);
                if i % 3 == 0 {
                    let value = format!("cid-{ext}");
                    let op = MemberOp::ChangeUnification {
                        attribute: Attribute::CustomId,
                        value: value.clone(),
                    };
                    if runtime.member_op(org, m.id, op).await.is_ok() {
                        println!("change {} {value}", m.id);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
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
    let keys = [Attribute::DisplayEmail, Attribute::CustomId]
        .map(|attribute| UnifyKey {
            attribute,
            is_distinct: attribute == Attribute::CustomId,
        })
        .to_vec();
    runtime.set_keys(org.id, keys).await?;
    Ok((org.id, channel.id))
}
