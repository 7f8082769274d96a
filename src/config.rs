//! The configuration: one struct, layered embedded defaults → file → env → flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use unify_actors::engine::{Attribute, BlockRule, Limits, NormalizeConfigError, Normalizer};
use unify_actors::settings::{CdhSettings, WebhookSettings};

/// The documented default configuration, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../config.toml");

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {source}")]
    Parse {
        origin: String,
        source: Box<toml::de::Error>,
    },
    #[error("invalid environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    #[error(transparent)]
    Normalize(#[from] NormalizeConfigError),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    pub unify: UnifyConfig,
    pub auth: AuthConfig,
    pub events: EventsConfig,
    pub cdh: CdhConfig,
    pub runtime: RuntimeConfig,
    pub webhooks: WebhooksConfig,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnifyConfig {
    pub default_region: String,
    pub max_members_per_value: u32,
    pub max_profile_size: u32,
    pub blocked_values: PerAttribute,
    pub blocked_patterns: PerAttribute,
}

/// Lists of strings for every attribute (`all`) and for each attribute.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerAttribute {
    pub all: Vec<String>,
    pub display_email: Vec<String>,
    pub display_mobile: Vec<String>,
    pub custom_id: Vec<String>,
    pub line_id: Vec<String>,
    pub connect_id: Vec<String>,
    pub external_member_id: Vec<String>,
}

impl PerAttribute {
    fn rules(&self) -> Vec<BlockRule> {
        let lists = [
            (None, &self.all),
            (Some(Attribute::DisplayEmail), &self.display_email),
            (Some(Attribute::DisplayMobile), &self.display_mobile),
            (Some(Attribute::CustomId), &self.custom_id),
            (Some(Attribute::LineId), &self.line_id),
            (Some(Attribute::ConnectId), &self.connect_id),
            (Some(Attribute::ExternalMemberId), &self.external_member_id),
        ];
        lists
            .into_iter()
            .flat_map(|(attribute, values)| {
                values.iter().map(move |value| BlockRule {
                    attribute,
                    value: value.clone(),
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub jwt_secret: Option<String>,
    pub issuer: String,
    pub platform_token_ttl_s: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub retain: u64,
    pub ws_queue: usize,
    pub ping_interval_s: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdhConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    pub timeout_ms: u64,
    pub batch_max: usize,
    pub max_attempts: u32,
    /// First retry delay of a failed delivery; doubles per attempt up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    pub max_in_flight_per_scope: usize,
    pub batch_max: usize,
    pub member_idle_ms: u64,
    pub request_timeout_ms: u64,
    pub restart_limit: u32,
    pub restart_window_s: u64,
    pub job_chunk: usize,
    pub import_chunk: usize,
    pub snapshot_min_mb: u64,
}

/// `[webhooks]`: limits of channel-event intake and provisioning (see `config.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub max_pending: usize,
    pub max_pending_per_channel: usize,
    pub max_pending_per_sender: usize,
    pub contact_api_timeout_ms: u64,
    pub contact_failure_cache_s: u64,
    pub contact_breaker_failures: u32,
    pub contact_breaker_cooldown_s: u64,
    pub link_max_failed_attempts: u32,
    pub link_attempt_window_s: u64,
}

/// Limits of the HTTP transport: how long a client may take to send a request, how many
/// connections are served at once and how large a request head may be.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection must send a request's complete head (request line and headers) within this
    /// long after it is accepted or after its previous response; otherwise it is closed. It is
    /// also how long an idle keep-alive connection is kept.
    pub header_read_timeout_ms: u64,
    /// A request whose body sends no bytes for this long is answered `408` and its connection
    /// closed. Idle time only: a long body that keeps arriving (an import) is never cut.
    pub body_idle_timeout_ms: u64,
    /// Connections (websockets included) served at once; at the cap the server stops accepting
    /// until one closes, and new clients wait in the listen backlog.
    pub max_connections: usize,
    /// A longer request target is refused with `414`.
    pub max_uri_bytes: usize,
    /// A request with more header fields is refused with `431`.
    pub max_header_count: usize,
    /// A request whose header names and values (plus 4 bytes per field for `: ` and CRLF) are
    /// larger in total is refused with `431`.
    pub max_header_bytes: usize,
    /// A connection whose client reads nothing for this long while the server writes to it is
    /// closed.
    pub write_idle_timeout_ms: u64,
}

impl HttpConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }

    pub fn body_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.body_idle_timeout_ms.max(1))
    }

    pub fn write_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.write_idle_timeout_ms.max(1))
    }

    /// How long a graceful shutdown waits for connections: each stalled state of a connection
    /// ends within one of the idle timeouts.
    pub fn shutdown_grace(&self) -> Duration {
        self.header_read_timeout()
            .max(self.body_idle_timeout())
            .max(self.write_idle_timeout())
    }
}

/// Overrides given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        parse(DEFAULT_CONFIG, "embedded defaults").expect("embedded config.toml is valid")
    }
}

impl Config {
    /// Loads the configuration: embedded defaults, then the file (`path`, or `./config.toml`
    /// when it exists), then the environment, then `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut value: toml::Table = DEFAULT_CONFIG.parse().map_err(|e| ConfigError::Parse {
            origin: "embedded defaults".into(),
            source: Box::new(e),
        })?;
        let file = path
            .map(Path::to_path_buf)
            .or_else(|| Some(PathBuf::from("config.toml")).filter(|p| p.exists()));
        if let Some(file) = file {
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            let layer: toml::Table = text.parse().map_err(|e| ConfigError::Parse {
                origin: file.display().to_string(),
                source: Box::new(e),
            })?;
            merge(&mut value, layer);
        }
        let mut config: Config =
            toml::Value::Table(value)
                .try_into()
                .map_err(|e| ConfigError::Parse {
                    origin: "merged configuration".into(),
                    source: Box::new(e),
                })?;
        config.apply_env(|name| std::env::var(name).ok())?;
        if let Some(listen) = &overrides.listen {
            config.listen = listen.clone();
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        config.normalizer()?;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("UNIFY_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = var("UNIFY_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("UNIFY_JWT_SECRET") {
            if v.is_empty() {
                return Err(ConfigError::Env {
                    name: "UNIFY_JWT_SECRET",
                    message: "must not be empty".into(),
                });
            }
            self.auth.jwt_secret = Some(v);
        }
        if let Some(v) = var("UNIFY_CDH_URL") {
            self.cdh.url = Some(v);
        }
        if let Some(v) = var("UNIFY_CDH_TOKEN") {
            self.cdh.token = Some(v);
        }
        Ok(())
    }

    /// Returns the normalizer described by `[unify]`.
    pub fn normalizer(&self) -> Result<Normalizer, ConfigError> {
        Ok(Normalizer::new(
            &self.unify.default_region,
            self.unify.blocked_values.rules(),
            self.unify.blocked_patterns.rules(),
        )?)
    }

    /// Returns the bridge settings described by `[cdh]`, `None` when no CDH url is set.
    pub fn cdh_settings(&self) -> Option<CdhSettings> {
        let cdh = &self.cdh;
        let url = cdh.url.as_ref().filter(|u| !u.trim().is_empty())?;
        Some(CdhSettings {
            url: url.clone(),
            token: cdh.token.clone(),
            timeout: Duration::from_millis(cdh.timeout_ms),
            batch_max: cdh.batch_max.max(1),
            max_attempts: cdh.max_attempts.max(1),
            retry_base: Duration::from_millis(cdh.retry_base_ms),
            retry_max: Duration::from_millis(cdh.retry_max_ms.max(cdh.retry_base_ms)),
        })
    }

    /// Returns the webhook limits described by `[webhooks]`. A pending bound of 0 would refuse
    /// every event, so each is at least 1.
    pub fn webhook_settings(&self) -> WebhookSettings {
        let w = &self.webhooks;
        WebhookSettings {
            max_pending: w.max_pending.max(1),
            max_pending_per_channel: w.max_pending_per_channel.max(1),
            max_pending_per_sender: w.max_pending_per_sender.max(1),
            contact_api_timeout: Duration::from_millis(w.contact_api_timeout_ms.max(1)),
            contact_failure_ttl: Duration::from_secs(w.contact_failure_cache_s),
            contact_breaker_failures: w.contact_breaker_failures,
            contact_breaker_cooldown: Duration::from_secs(w.contact_breaker_cooldown_s),
            link_max_failed_attempts: w.link_max_failed_attempts,
            link_attempt_window: Duration::from_secs(w.link_attempt_window_s),
        }
    }

    /// Returns the partition limits described by `[unify]`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_members_per_value: self.unify.max_members_per_value,
            max_profile_size: self.unify.max_profile_size,
        }
    }
}

fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.into(),
        source: Box::new(e),
    })
}

/// Merges `layer` into `base`, table by table; values of `layer` win.
fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => merge(b, l),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_match_the_spec() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.unify.default_region, "TW");
        assert_eq!(c.unify.max_members_per_value, 1000);
        assert_eq!(c.unify.max_profile_size, 10000);
        assert_eq!(c.auth.issuer, "unify");
        assert_eq!(c.auth.platform_token_ttl_s, 300);
        assert_eq!(c.events.retain, 100_000);
        assert_eq!(c.events.ws_queue, 1024);
        assert_eq!(
            (c.cdh.timeout_ms, c.cdh.batch_max, c.cdh.max_attempts),
            (5000, 100, 12)
        );
        assert_eq!((c.cdh.retry_base_ms, c.cdh.retry_max_ms), (1000, 300_000));
        assert_eq!(c.cdh.url, None);
        assert_eq!(
            (c.http.header_read_timeout_ms, c.http.body_idle_timeout_ms),
            (10_000, 60_000)
        );
        assert_eq!(c.http.max_connections, 16_384);
        assert_eq!(c.http.write_idle_timeout_ms, 60_000);
        assert_eq!(c.http.shutdown_grace(), Duration::from_secs(60));
        assert_eq!(
            (
                c.http.max_uri_bytes,
                c.http.max_header_count,
                c.http.max_header_bytes
            ),
            (8192, 100, 65_536)
        );
        assert_eq!(c.cdh_settings(), None);
        assert_eq!(c.webhook_settings(), WebhookSettings::default());
        let n = c.normalizer().unwrap();
        assert_eq!(n.normalize(Attribute::CustomId, "null"), None);
    }

    #[test]
    fn a_file_overrides_defaults_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9\"\n[unify]\nmax_profile_size = 7\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9");
        assert_eq!(c.unify.max_profile_size, 7);
        assert_eq!(c.unify.max_members_per_value, 1000);

        std::fs::write(&path, "[unify]\nmax_profile_sise = 7\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("max_profile_sise"), "{err}");

        std::fs::write(&path, "[unify.blocked_patterns]\nall = [\"(\"]\n").unwrap();
        assert!(matches!(
            Config::load(Some(&path), &Overrides::default()),
            Err(ConfigError::Normalize(_))
        ));
    }

    #[test]
    fn environment_then_flags_win() {
        let mut c = Config::default();
        c.apply_env(|name| match name {
            "UNIFY_LISTEN" => Some("127.0.0.1:1".into()),
            "UNIFY_CDH_URL" => Some("http://cdh".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.cdh.url.as_deref(), Some("http://cdh"));
        assert!(
            c.apply_env(|n| (n == "UNIFY_JWT_SECRET").then(String::new))
                .is_err()
        );
    }
}
