//! The channels' contact APIs (SPEC 6): the HTTP client, the per-identity cache of fetch
//! outcomes and the per-channel circuit breaker.
//!
//! A contact API that hangs must not turn into minutes of waiting for a channel: each fetch
//! is bounded by the configured timeout, and its outcome is remembered for the identity, a
//! profile for an hour and a failure for `contact_failure_ttl`. An outcome obtained after an
//! event was accepted also serves that event whatever its age, so the events an identity
//! queued while its fetch ran share that one fetch. After `contact_breaker_failures`
//! consecutive failures of one channel its API is not asked for `contact_breaker_cooldown`,
//! then one fetch probes it. Whenever no profile comes back, provisioning proceeds without
//! one, as for any fetch error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use unify_storage::{ContactApi, Id};

use super::{EventProfile, LaneKey};
use crate::error::OpError;
use crate::settings::WebhookSettings;

/// How long a fetched contact profile is reused for its identity.
pub const CONTACT_CACHE_TTL: Duration = Duration::from_secs(3600);

/// Cached outcomes kept at most; beyond it expired entries go first, then the oldest.
const CACHE_MAX: usize = 100_000;

/// Largest contact-API answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// The outcome of one fetch, as remembered for its identity.
#[derive(Debug, Clone)]
struct Outcome {
    at: Instant,
    /// `None`: the fetch failed.
    profile: Option<EventProfile>,
}

/// A channel's run of failed fetches.
#[derive(Debug, Clone, Copy)]
struct Breaker {
    consecutive: u32,
    /// While the run is at the threshold: fetches are skipped until then.
    open_until: Option<Instant>,
}

/// What a profile lookup needs from the contact API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// A remembered outcome answers.
    Cached,
    /// The channel's breaker is open.
    Skip,
    Fetch,
}

/// The contact-API client with its memory of outcomes.
#[derive(Debug)]
pub(super) struct Contacts {
    client: reqwest::Client,
    failure_ttl: Duration,
    breaker_failures: u32,
    breaker_cooldown: Duration,
    outcomes: Mutex<HashMap<LaneKey, Outcome>>,
    breakers: Mutex<HashMap<Id, Breaker>>,
}

impl Contacts {
    pub(super) fn new(settings: &WebhookSettings) -> Result<Contacts, OpError> {
        let client = reqwest::Client::builder()
            .timeout(settings.contact_api_timeout)
            .connect_timeout(settings.contact_api_timeout)
            .build()
            .map_err(|e| OpError::Unavailable(format!("contact-API client: {e}")))?;
        Ok(Contacts {
            client,
            failure_ttl: settings.contact_failure_ttl,
            breaker_failures: settings.contact_breaker_failures,
            breaker_cooldown: settings.contact_breaker_cooldown,
            outcomes: Mutex::default(),
            breakers: Mutex::default(),
        })
    }

    /// Returns the identity's contact profile for an event accepted at `accepted`: a
    /// remembered outcome when it is recent enough (or newer than the event), nothing while
    /// the channel's breaker is open, else what `GET {url}/users/{id}` answers. Any failure
    /// is logged, remembered and yields no profile.
    pub(super) async fn profile(
        &self,
        key: &LaneKey,
        api: &ContactApi,
        accepted: Instant,
    ) -> Option<EventProfile> {
        let channel_id = key.0;
        let cached = self.remembered(key, accepted);
        match self.ask(channel_id, cached.is_some(), Instant::now()) {
            Ask::Cached => {
                let profile = cached.flatten();
                if profile.is_none() {
                    metrics::counter!("unify_contact_api_skipped_total", "reason" => "failed_recently")
                        .increment(1);
                }
                return profile;
            }
            Ask::Skip => {
                metrics::counter!("unify_contact_api_skipped_total", "reason" => "circuit_open")
                    .increment(1);
                tracing::debug!(
                    channel_id,
                    "contact api circuit open, provisioning without profile"
                );
                return None;
            }
            Ask::Fetch => {}
        }
        let result = self.fetch_profile(api, &key.1).await;
        let now = Instant::now();
        // Only a failure of the API itself counts against the channel: an identity it does not
        // know (404) says nothing about the other senders.
        self.record(
            channel_id,
            !matches!(&result, Err(e) if e.channel_fault),
            now,
        );
        let profile = match result {
            Ok(profile) => Some(profile),
            Err(err) => {
                metrics::counter!("unify_contact_api_errors_total").increment(1);
                tracing::warn!(channel_id, error = %err, "contact api fetch failed, provisioning without profile");
                None
            }
        };
        self.remember(key.clone(), profile.clone(), now);
        profile
    }

    /// Returns the remembered outcome that may serve an event accepted at `accepted`
    /// (`Some(None)`: a failure): one within its time to live, or one obtained after the
    /// event was accepted.
    fn remembered(&self, key: &LaneKey, accepted: Instant) -> Option<Option<EventProfile>> {
        let outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = outcomes.get(key)?;
        (outcome.at >= accepted || outcome.at.elapsed() < self.ttl(outcome))
            .then(|| outcome.profile.clone())
    }

    fn ttl(&self, outcome: &Outcome) -> Duration {
        match outcome.profile {
            Some(_) => CONTACT_CACHE_TTL,
            None => self.failure_ttl,
        }
    }

    fn remember(&self, key: LaneKey, profile: Option<EventProfile>, at: Instant) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        if outcomes.len() >= CACHE_MAX && !outcomes.contains_key(&key) {
            // Expired outcomes go first, then the oldest, down to nine tenths of the cap, so
            // that the scan runs once per tenth of the cap, not on every insert.
            outcomes.retain(|_, o| o.at.elapsed() < self.ttl(o));
            let keep = CACHE_MAX * 9 / 10;
            if outcomes.len() > keep {
                let mut ages: Vec<Instant> = outcomes.values().map(|o| o.at).collect();
                let cut = ages.len() - keep;
                let (_, &mut oldest_kept, _) = ages.select_nth_unstable(cut);
                outcomes.retain(|_, o| o.at >= oldest_kept);
            }
        }
        outcomes.insert(key, Outcome { at, profile });
    }

    /// Decides whether a lookup asks the contact API. An open breaker whose cool-down has
    /// passed lets this one fetch through as a probe and stays open for the others until
    /// the probe's outcome is recorded.
    fn ask(&self, channel_id: Id, cached: bool, now: Instant) -> Ask {
        if cached {
            return Ask::Cached;
        }
        if self.breaker_failures == 0 {
            return Ask::Fetch;
        }
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(breaker) = breakers.get_mut(&channel_id) else {
            return Ask::Fetch;
        };
        match breaker.open_until {
            Some(until) if now < until => Ask::Skip,
            Some(_) => {
                breaker.open_until = Some(now + self.breaker_cooldown);
                Ask::Fetch
            }
            None => Ask::Fetch,
        }
    }

    /// Records a fetch's success (closes the channel's breaker) or failure (opens it at the
    /// threshold).
    fn record(&self, channel_id: Id, ok: bool, now: Instant) {
        if self.breaker_failures == 0 {
            return;
        }
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            breakers.remove(&channel_id);
            return;
        }
        let breaker = breakers.entry(channel_id).or_insert(Breaker {
            consecutive: 0,
            open_until: None,
        });
        breaker.consecutive = breaker.consecutive.saturating_add(1);
        if breaker.consecutive >= self.breaker_failures {
            if breaker.open_until.is_none_or(|until| until <= now) {
                tracing::warn!(
                    channel_id,
                    failures = breaker.consecutive,
                    cooldown_s = self.breaker_cooldown.as_secs(),
                    "contact api circuit opened"
                );
            }
            breaker.open_until = Some(now + self.breaker_cooldown);
        }
    }

    /// Drops outcomes past their time to live.
    pub(super) fn prune(&self) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        outcomes.retain(|_, o| o.at.elapsed() < self.ttl(o));
    }

    async fn fetch_profile(
        &self,
        api: &ContactApi,
        identity: &str,
    ) -> Result<EventProfile, FetchError> {
        /// The contact API's answer; other fields are ignored.
        #[derive(Deserialize)]
        struct Contact {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            display_email: Option<String>,
            #[serde(default)]
            display_mobile: Option<String>,
        }
        let contact: Contact = self.get_json(api, &["users", identity]).await?;
        Ok(EventProfile {
            name: contact.name,
            display_email: contact.display_email,
            display_mobile: contact.display_mobile,
        })
    }

    /// Detects a channel's tenant key from `GET {url}/tenant` → `{tenant_key}`.
    pub(super) async fn detect_tenant(&self, api: &ContactApi) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Tenant {
            tenant_key: Option<String>,
        }
        let tenant: Tenant = self
            .get_json(api, &["tenant"])
            .await
            .map_err(|e| e.message)?;
        tenant
            .tenant_key
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| "answered no tenant_key".to_owned())
    }

    /// Sends `GET {url}/{segments}` to the contact API and decodes its JSON answer.
    async fn get_json<T: DeserializeOwned>(
        &self,
        api: &ContactApi,
        segments: &[&str],
    ) -> Result<T, FetchError> {
        let url = endpoint(&api.url, segments).map_err(FetchError::channel)?;
        let mut response = self
            .client
            .get(url)
            .bearer_auth(&api.token)
            .send()
            .await
            .map_err(|e| FetchError::channel(format!("request failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let message = format!("answered {status}");
            let channel_fault = status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::REQUEST_TIMEOUT;
            return Err(FetchError {
                message,
                channel_fault,
            });
        }
        // Read at most MAX_ANSWER bytes: the answer is a small profile, and an API that sends
        // more must not make the server buffer it.
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::channel(format!("unreadable answer: {e}")))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(FetchError::channel(format!(
                    "answer larger than {MAX_ANSWER} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        crate::json::parse(&body)
            .map_err(|e| FetchError::channel(format!("unreadable answer: {e}")))
    }
}

/// Why a fetch failed, and whether it says the channel's API is failing (timeouts, connection
/// errors, 5xx, 408, 429, unreadable answers) rather than one identity (any other 4xx).
#[derive(Debug)]
pub(super) struct FetchError {
    message: String,
    channel_fault: bool,
}

impl FetchError {
    fn channel(message: impl Into<String>) -> Self {
        FetchError {
            message: message.into(),
            channel_fault: true,
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Returns `base` with path segments appended (each percent-encoded).
fn endpoint(base: &str, segments: &[&str]) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| format!("bad contact-API url: {e}"))?;
    url.path_segments_mut()
        .map_err(|()| "bad contact-API url".to_owned())?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::check_contact_api;

    fn contacts(failure_ttl_s: u64, breaker_failures: u32) -> Contacts {
        Contacts::new(&WebhookSettings {
            contact_failure_ttl: Duration::from_secs(failure_ttl_s),
            contact_breaker_failures: breaker_failures,
            contact_breaker_cooldown: Duration::from_secs(30),
            ..WebhookSettings::default()
        })
        .unwrap()
    }

    fn key(identity: &str) -> LaneKey {
        (1, identity.to_owned())
    }

    #[test]
    fn failures_are_remembered_for_their_time_to_live() {
        let c = contacts(60, 0);
        let accepted = Instant::now();
        c.remember(key("a"), None, Instant::now());
        assert_eq!(c.remembered(&key("a"), accepted), Some(None));
        assert_eq!(c.remembered(&key("b"), accepted), None);
        let profile = EventProfile {
            name: Some("Ann".into()),
            ..EventProfile::default()
        };
        c.remember(key("a"), Some(profile.clone()), Instant::now());
        assert_eq!(c.remembered(&key("a"), accepted), Some(Some(profile)));
    }

    #[test]
    fn events_queued_during_a_fetch_share_its_outcome_without_a_failure_cache() {
        let c = contacts(0, 0);
        let queued = Instant::now();
        c.remember(key("a"), None, Instant::now());
        assert_eq!(
            c.remembered(&key("a"), queued),
            Some(None),
            "accepted before the outcome: shared"
        );
        let later = Instant::now() + Duration::from_millis(1);
        assert_eq!(
            c.remembered(&key("a"), later),
            None,
            "accepted after it, with no failure cache: fetched again"
        );
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let c = contacts(60, 3);
        let t0 = Instant::now();
        for _ in 0..2 {
            c.record(1, false, t0);
        }
        assert_eq!(c.ask(1, false, t0), Ask::Fetch, "below the threshold");
        c.record(1, true, t0);
        for _ in 0..2 {
            c.record(1, false, t0);
        }
        assert_eq!(
            c.ask(1, false, t0),
            Ask::Fetch,
            "a success restarted the run"
        );
        c.record(1, false, t0);
        assert_eq!(c.ask(1, false, t0), Ask::Skip, "open");
        assert_eq!(c.ask(2, false, t0), Ask::Fetch, "per channel");
        assert_eq!(
            c.ask(1, true, t0),
            Ask::Cached,
            "remembered outcomes still serve"
        );
        let after = t0 + Duration::from_secs(31);
        assert_eq!(c.ask(1, false, after), Ask::Fetch, "one probe");
        assert_eq!(c.ask(1, false, after), Ask::Skip, "the others wait for it");
        c.record(1, false, after);
        assert_eq!(c.ask(1, false, after + Duration::from_secs(29)), Ask::Skip);
        let later = after + Duration::from_secs(31);
        assert_eq!(c.ask(1, false, later), Ask::Fetch);
        c.record(1, true, later);
        assert_eq!(c.ask(1, false, later), Ask::Fetch, "closed by the success");
        assert_eq!(c.ask(1, false, later), Ask::Fetch);
    }

    #[test]
    fn contact_api_urls_are_checked_and_joined() {
        let api = |url: &str| ContactApi {
            url: url.into(),
            token: "t".into(),
        };
        assert!(check_contact_api(&api("https://contacts.example.com/v1")).is_ok());
        assert!(check_contact_api(&api("ftp://contacts.example.com")).is_err());
        assert!(check_contact_api(&api("not a url")).is_err());
        assert!(
            check_contact_api(&ContactApi {
                url: "http://x".into(),
                token: " ".into()
            })
            .is_err()
        );
        assert_eq!(
            endpoint("http://h:1/v1/", &["users", "a/b c"])
                .unwrap()
                .as_str(),
            "http://h:1/v1/users/a%2Fb%20c"
        );
        assert_eq!(
            endpoint("http://h:1", &["tenant"]).unwrap().as_str(),
            "http://h:1/tenant"
        );
    }
}
