//! Boots the store and the actor runtime and runs until shut down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use unify_actors::runtime::Runtime;
use unify_actors::settings::Settings;
use unify_storage::Store;

use crate::auth::{Role, Tokens};
use crate::config::Config;
use crate::http::AppState;

/// Lifetime of the root token printed on first start.
const ROOT_TOKEN_TTL_S: u64 = 24 * 3600;

/// Returns the runtime settings described by the configuration.
pub fn settings(config: &Config) -> anyhow::Result<Settings> {
    let rt = &config.runtime;
    Ok(Settings {
        normalizer: Arc::new(config.normalizer()?),
        limits: config.limits(),
        max_in_flight_per_scope: rt.max_in_flight_per_scope,
        batch_max: rt.batch_max,
        member_idle: Duration::from_millis(rt.member_idle_ms),
        call_timeout: Duration::from_millis(rt.request_timeout_ms),
        restart_limit: rt.restart_limit,
        restart_window: Duration::from_secs(rt.restart_window_s),
        job_chunk: rt.job_chunk,
        import_chunk: rt.import_chunk,
        snapshot_min_bytes: rt.snapshot_min_mb.max(1) << 20,
        events_retain: config.events.retain,
        cdh_enabled: config.cdh_settings().is_some(),
        cdh: config.cdh_settings(),
        webhooks: config.webhook_settings(),
    })
}

/// Opens the store in the configured data directory (creating it) and starts the runtime.
pub async fn start(config: &Config) -> anyhow::Result<Runtime> {
    start_with(config, settings(config)?).await
}

/// Like [`start`], with the runtime settings given (the crash driver sets a finer snapshot
/// bound than the configuration's whole MiB).
pub async fn start_with(config: &Config, settings: Settings) -> anyhow::Result<Runtime> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let dir = config.data_dir.join("store");
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await?
        .context("cannot open the store")?;
    Runtime::start(store, settings)
        .await
        .context("cannot start the runtime")
}

/// Runs the service on `listener` until `shutdown` resolves: stops accepting, closes
/// websockets, waits for in-flight requests, drains the actors and flushes the store.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tokens = Arc::new(Tokens::from_config(&config)?);
    // Installed before the store opens, so that the store's state gauge is recorded from the
    // start.
    let metrics = crate::metrics::handle();
    let runtime = Arc::new(start(&config).await?);
    announce_root_token(&runtime, &tokens)?;
    let (closing_tx, closing) = watch::channel(false);
    let state = AppState {
        runtime: runtime.clone(),
        tokens,
        config: Arc::new(config),
        metrics,
        closing,
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %state.config.data_dir.display(), "unify started");
    let http = state.config.http.clone();
    crate::http::serve::serve(listener, crate::http::router(state), &http, async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = closing_tx.send(true);
    })
    .await;
    runtime.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Prints a root token when the deployment has no account yet, so that the operator can
/// create the first one.
fn announce_root_token(runtime: &Runtime, tokens: &Tokens) -> anyhow::Result<()> {
    if runtime.store().has_accounts()? {
        return Ok(());
    }
    let token = tokens.issue("root", Role::Root, None, Vec::new(), ROOT_TOKEN_TTL_S)?;
    println!("no accounts yet; a root token valid for 24 hours:\n{token}");
    Ok(())
}
