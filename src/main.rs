use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use unify::auth::{Role, Tokens, parse_ttl};
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            runtime()?.block_on(async {
                let shutdown = shutdown_signal()?;
                let listener = tokio::net::TcpListener::bind(&config.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.listen))?;
                unify::run(config, listener, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch {
            org,
            token,
            server,
            since,
        } => {
            runtime()?.block_on(unify::watch::run(&server, org, &token, since))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            role,
            account,
            orgs,
            ttl,
            sub,
            console,
            config,
            data_dir,
        } => {
            let config = load(config, None, data_dir)?;
            if role != Role::Root && account.is_none() {
                anyhow::bail!("--account is required for admin and agent tokens");
            }
            let tokens = Tokens::from_config(&config)?;
            let token = tokens.issue(&sub, role, account, orgs, parse_ttl(&ttl)?)?;
            if console {
                println!("{}", unify::console_link(&config.listen, &token));
            } else {
                println!("{token}");
            }
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
        Command::CrashDriver {
            data_dir,
            writers,
            snapshot_min_bytes,
            settle,
            events_retain,
            cdh_retry_ms,
        } => {
            let config = load(None, None, Some(data_dir))?;
            let options = unify::driver::Options {
                writers,
                snapshot_min_bytes,
                settle,
                events_retain,
                cdh_retry_ms,
            };
            runtime()?.block_on(unify::driver::run(config, options))?;
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

/// Installs the SIGINT and SIGTERM handlers now (so that a signal arriving while the server
/// boots is not lost to the default action) and returns a future that resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
