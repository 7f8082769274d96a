//! Command-line interface of the `unify` binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::auth::Role;
use crate::synth::GenSource;

#[derive(Debug, Parser)]
#[command(
    name = "unify",
    version,
    about = "Self-hosted profile unification engine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the service.
    Serve {
        /// Configuration file (default: ./config.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides config and UNIFY_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory (overrides config and UNIFY_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Prints an API token signed with the deployment secret (works while the server runs).
    Token {
        #[arg(long, value_enum)]
        role: Role,
        /// The account of an admin or agent token.
        #[arg(long)]
        account: Option<u64>,
        /// An org an agent token may use (repeatable).
        #[arg(long = "org")]
        orgs: Vec<u64>,
        /// Lifetime, e.g. `300s`, `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The token's subject.
        #[arg(long, default_value = "cli")]
        sub: String,
        /// Prints a sign-in link for the console instead: `http://LISTEN/console#token=...`
        /// (the token in the fragment, which browsers never send to a server).
        #[arg(long)]
        console: bool,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Prints the websocket frames of one org, one JSON object per line.
    Watch {
        /// The org whose scope's events are printed.
        #[arg(long)]
        org: u64,
        /// An API token that may use the org.
        #[arg(long, env = "UNIFY_TOKEN")]
        token: String,
        /// Base URL of the server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Replays the retained events after this sequence number first.
        #[arg(long)]
        since: Option<u64>,
    },
    /// Checks offline that every scope's stored partition equals a full rebuild.
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Writes members until killed, printing each acknowledged write (crash test driver).
    #[command(hide = true)]
    CrashDriver {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Journal bytes of an org after which a snapshot is written (default: the config's).
        #[arg(long)]
        snapshot_min_bytes: Option<u64>,
        /// Waits for import jobs, prints the served state and exits instead of writing.
        #[arg(long)]
        settle: bool,
        /// Events retained per scope (default: the config's `events.retain`).
        #[arg(long)]
        events_retain: Option<u64>,
        /// First CDH retry delay in milliseconds (default: the config's).
        #[arg(long)]
        cdh_retry_ms: Option<u64>,
    },
    /// Prints deterministic synthetic members as NDJSON.
    Gen {
        /// Number of members.
        #[arg(long)]
        members: u64,
        /// Seed; the same seed gives the same members.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Product of the members (maac members have no channel).
        #[arg(long, value_enum, default_value = "caac")]
        source: GenSource,
        /// Channel ids caac members are spread over.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        channels: Vec<u64>,
        /// Size of the pool of people (default 60% of members); give the same value to caac
        /// and maac runs to make them overlap.
        #[arg(long)]
        people: Option<u64>,
    },
}
