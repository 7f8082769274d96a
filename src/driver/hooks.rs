//! The driver's channel webhook sender: signed events posted through the application's own
//! router (the HTTP webhook route, its signature check included), each followed by a write to
//! the member it provisioned and a re-send of the same event, and re-sends at random of events
//! of earlier runs. A second application of an event would show: a second member for its
//! sender, or the profile of the event written back over the later write.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use tower::ServiceExt;
use unify_actors::runtime::Runtime;
use unify_storage::{Id, Member};

use super::{Line, Op};
use crate::auth::Tokens;
use crate::config::Config;
use crate::http::AppState;
use crate::http::webhooks::SIGNATURE_HEADER;

/// Prefix of the external member ids (identities) of webhook senders.
pub const IDENTITY_PREFIX: &str = "wh-";

/// Percentage of steps that re-send an event sent before.
const RESEND_PERCENT: u32 = 30;

/// How long provisioning of an accepted event may take on a loaded machine.
const PROVISION_PATIENCE: Duration = Duration::from_secs(60);

/// Returns the event id the driver gives the event of a sender identity.
pub fn event_id(identity: &str) -> String {
    format!("evt-{identity}")
}

/// The webhook writer of one run.
pub struct Hooks {
    router: axum::Router,
    runtime: Arc<Runtime>,
    org: Id,
    channel: Id,
    secret: String,
    name: String,
    /// Sender identities whose event was sent, in this run or (as their members show) before.
    sent: Vec<String>,
    /// Keeps the router's shutdown signal open.
    _closing: tokio::sync::watch::Sender<bool>,
}

impl Hooks {
    /// Prepares the router and the channel's secret; `served` are the members served on start.
    pub fn new(
        config: &Config,
        runtime: Arc<Runtime>,
        org: Id,
        channel: Id,
        run: u32,
        served: &[Member],
    ) -> anyhow::Result<Hooks> {
        let secret = runtime.channel(org, channel)?.webhook_secret;
        let (closing_tx, closing) = tokio::sync::watch::channel(false);
        let state = AppState {
            runtime: runtime.clone(),
            tokens: Arc::new(Tokens::from_config(config)?),
            config: Arc::new(config.clone()),
            metrics: crate::metrics::handle(),
            closing,
        };
        let sent = served
            .iter()
            .map(|m| m.external_member_id.clone())
            .filter(|ext| ext.starts_with(IDENTITY_PREFIX))
            .collect();
        Ok(Hooks {
            router: crate::http::router(state),
            runtime,
            org,
            channel,
            secret,
            name: format!("{IDENTITY_PREFIX}{run:08x}"),
            sent,
            _closing: closing_tx,
        })
    }

    pub async fn run(mut self) -> anyhow::Result<()> {
        for i in 0u64.. {
            let resend = rand::rng().random_range(0..100) < RESEND_PERCENT;
            if resend && !self.sent.is_empty() {
                let at = rand::rng().random_range(0..self.sent.len());
                let identity = self.sent[at].clone();
                self.send(&identity).await?;
                continue;
            }
            let identity = format!("{}-{i}", self.name);
            self.sent.push(identity.clone());
            if self.send(&identity).await? != "accepted" {
                continue;
            }
            let member = self.provisioned(&identity).await?;
            Line::Provisioned(member.clone()).print();
            // Written after the event: applying the event again would write its email back.
            let op = Op::Uni {
                attribute: "display_email".into(),
                value: Some(format!("moved-{i}@x.com")),
            };
            Line::Try {
                member_id: member.id,
                op: op.clone(),
            }
            .print();
            let acked = self
                .runtime
                .member_op(self.org, member.id, op.member_op())
                .await;
            if let Ok(Some(m)) = acked {
                Line::Acked(m).print();
            }
            self.send(&identity).await?;
        }
        Ok(())
    }

    /// Posts the event of `identity`, signed, and prints the answer.
    async fn send(&self, identity: &str) -> anyhow::Result<String> {
        let event_id = event_id(identity);
        let body = event_body(&event_id, identity);
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        let request = Request::post(format!(
            "/api/v1/orgs/{}/channels/{}/events",
            self.org, self.channel
        ))
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, format!("sha256={signature}"))
        .body(Body::from(body))?;
        Line::TryHook {
            event_id: event_id.clone(),
            identity: identity.to_owned(),
        }
        .print();
        let response = self.router.clone().oneshot(request).await?;
        let status = response.status();
        let answer = if status == StatusCode::ACCEPTED || status == StatusCode::OK {
            let bytes = axum::body::to_bytes(response.into_body(), 4096).await?;
            let body: serde_json::Value = serde_json::from_slice(&bytes)?;
            body["status"]
                .as_str()
                .context("a webhook answer has a status")?
                .to_owned()
        } else {
            format!("status {}", status.as_u16())
        };
        Line::Hooked {
            event_id,
            answer: answer.clone(),
        }
        .print();
        Ok(answer)
    }

    /// Waits until the member of an accepted event is provisioned (in the background).
    async fn provisioned(&self, identity: &str) -> anyhow::Result<Member> {
        let deadline = tokio::time::Instant::now() + PROVISION_PATIENCE;
        loop {
            let found = self
                .runtime
                .find_members(self.org, Some(self.channel), Some(identity), 0, 1)
                .await;
            if let Ok(Some(member)) = found.map(|f| f.into_iter().next()) {
                return Ok(member);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the event of {identity} was not provisioned"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Returns the body of the event of `identity`: the same bytes every time it is sent. Its
/// email links the sender with the writers' members (`p<n>@x.com`).
fn event_body(event_id: &str, identity: &str) -> String {
    let n = identity.bytes().map(u64::from).sum::<u64>() % 50;
    serde_json::json!({
        "event_id": event_id,
        "type": "message",
        "tenant_key": super::TENANT,
        "sender": { "external_member_id": identity, "name": "hook" },
        "profile": { "display_email": format!("p{n}@x.com") },
        "text": "hello",
        "sent_at": "2026-01-31T12:25:27Z",
    })
    .to_string()
}
