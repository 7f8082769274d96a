use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use unify::cli::{Cli, Command};
use unify::config::{Config, Overrides};
use unify::synth::{GenOptions, write_ndjson};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Gen {
            members,
            seed,
            source,
            channels,
            people,
        } => {
            let options = GenOptions {
                members,
                seed,
                source,
                channels,
                people,
            };
            write_ndjson(&options, std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let config = load(config, listen, data_dir)?;
            runtime()?.block_on(unify::run(config, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { config, data_dir } => {
            let config = load(config, None, data_dir)?;
            let store = unify_storage::Store::open(&config.data_dir.join("store"))?;
            let report =
                unify_actors::verify::verify(&store, &config.normalizer()?, config.limits())?;
            println!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::CrashDriver { data_dir, writers } => {
            let config = load(None, None, Some(data_dir))?;
            runtime()?.block_on(unify::driver::run(config, writers))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(
    config: Option<PathBuf>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    Ok(Config::load(
        config.as_deref(),
        &Overrides { listen, data_dir },
    )?)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("signal handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
