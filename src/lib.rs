//! unify: a self-hosted, single-binary profile unification engine.
//!
//! The binary parses its command line and calls into this crate; everything else (the engine,
//! actors, storage) lives in the `unify-actors` and `unify-storage` crates.

pub mod cli;
pub mod config;
pub mod synth;
