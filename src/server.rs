//! Boots the store and the actor runtime and runs until shut down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use unify_actors::runtime::Runtime;
use unify_actors::settings::Settings;
use unify_storage::Store;

use crate::config::Config;

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
        events_retain: config.events.retain,
        cdh_enabled: config.cdh.url.is_some(),
    })
}

/// Opens the store in the configured data directory (creating it) and starts the runtime.
pub async fn start(config: &Config) -> anyhow::Result<Runtime> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let dir = config.data_dir.join("store");
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await?
        .context("cannot open the store")?;
    Runtime::start(store, settings(config)?)
        .await
        .context("cannot start the runtime")
}

/// Runs the service until `shutdown` resolves, then drains the actors and flushes the store.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let runtime = start(&config).await?;
    tracing::info!(data_dir = %config.data_dir.display(), "unify started");
    shutdown.await;
    tracing::info!("shutting down");
    runtime.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}
