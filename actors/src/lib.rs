//! unify-actors: the pure unification engine and the actor runtime around it.

pub mod bridge;
pub mod clock;
pub mod directory;
pub mod engine;
pub mod error;
pub mod events;
pub mod hub;
pub mod import;
pub mod input;
pub mod json;
pub mod key_change;
pub mod links;
pub mod member;
pub mod ops;
pub mod provision;
pub mod router;
pub mod runtime;
pub mod scope;
pub mod settings;
pub mod status;
pub mod supervisor;
pub mod verify;
