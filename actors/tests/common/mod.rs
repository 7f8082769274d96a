//! Fixtures the actor tests share: a runtime on a sled store in a temporary directory, and the
//! account, caac org and channel most tests start from.
#![allow(dead_code)]

use std::path::Path;

use unify_actors::engine::{Attribute, UnifyKey};
use unify_actors::runtime::{NewChannel, Runtime};
use unify_actors::settings::Settings;
use unify_actors::verify::verify;
use unify_storage::{Id, Source, Store};

/// Opens (or creates) the store in `dir` and starts a runtime on it.
pub async fn boot(dir: &Path, settings: Settings) -> Runtime {
    let store = Store::open(dir).expect("store opens");
    Runtime::start(store, settings)
        .await
        .expect("runtime starts")
}

/// An account with a caac org and one channel of it.
pub struct World {
    pub account: Id,
    pub caac: Id,
    pub channel: Id,
}

/// Creates an account called `name` with a caac org `chat` and a LINE channel `line`.
pub async fn world(rt: &Runtime, name: &str) -> World {
    let account = rt.create_account(name).await.unwrap().id;
    let caac = rt
        .create_org(account, Source::Caac, "chat", None)
        .await
        .unwrap()
        .id;
    let channel = rt
        .create_channel(
            caac,
            NewChannel {
                name: "line".into(),
                channel_type: "line".into(),
                ..NewChannel::default()
            },
        )
        .await
        .unwrap()
        .id;
    World {
        account,
        caac,
        channel,
    }
}

/// A non-distinct unify key on `attribute`.
pub fn key(attribute: Attribute) -> UnifyKey {
    UnifyKey {
        attribute,
        is_distinct: false,
    }
}

/// Panics unless `unify verify` finds the store consistent.
pub fn assert_verified(store: &Store) {
    let report = verify(store, &Default::default(), Default::default()).unwrap();
    assert!(report.is_ok(), "verify: {report:?}");
}
