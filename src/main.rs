use std::process::ExitCode;

use clap::Parser;
use unify::cli::{Cli, Command};
use unify::synth::{GenOptions, write_ndjson};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
            write_ndjson(&options, std::io::stdout().lock()).map_err(anyhow::Error::from)
        }
        Command::Serve { .. } | Command::Verify { .. } => Err(anyhow::anyhow!(
            "not available yet: see the actor runtime issue"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
