//! What every handler can reach: the runtime, the token checker, the configuration, the
//! metrics handle and the shutdown signal. A leaf of `http/`.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use unify_actors::runtime::Runtime;

use crate::auth::Tokens;
use crate::config::Config;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub tokens: Arc<Tokens>,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    /// Turns `true` when the server shuts down; websocket connections close on it.
    pub closing: tokio::sync::watch::Receiver<bool>,
}
