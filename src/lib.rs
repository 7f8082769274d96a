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
