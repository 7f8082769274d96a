//! unify: a self-hosted, single-binary profile unification engine.
//!
//! The binary parses its command line and calls into this crate; the engine and actors live in
//! `unify-actors`, storage in `unify-storage`.

pub mod auth;
pub mod cli;
pub mod config;
pub mod driver;
pub mod error;
pub mod http;
pub mod metrics;
pub mod server;
pub mod synth;
pub mod watch;

pub use server::run;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the console sign-in link for a server listening on `listen`: the token travels in
/// the URL fragment, which a browser keeps to itself (never in a query string, hence never in
/// a request line or an access log).
pub fn console_link(listen: &str, token: &str) -> String {
    format!("http://{listen}/console#token={token}")
}
