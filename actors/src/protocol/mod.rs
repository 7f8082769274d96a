//! The messages and payload types that cross actor boundaries (like quickwit-indexing's
//! `models/`): what a scope actor is asked and answers. A leaf below the actors and the
//! services: it may name the engine, the error codes and the plain data types (`ops`,
//! `events`, `key_change`), never an actor or a service, so any of them can import it.

pub mod import;
pub mod provision;
pub mod scope;

use ractor::RpcReplyPort;

use crate::error::OpError;

pub use self::import::{ImportChunk, Prepared};
pub use self::provision::{EventProfile, Provisioned, Redemption, Sender};
pub use self::scope::{MemberGraph, ProfileView, ScopeMsg};

/// The reply port of a scope call.
pub type Reply<T> = RpcReplyPort<Result<T, OpError>>;
