//! Persistent storage of unify: domain records (accounts, orgs, channels, members, scopes,
//! events, the CDH outbox) in an embedded `sled` database.
//!
//! Nothing outside this crate touches sled: callers read domain types through [`Store`] and
//! write them through a [`WriteBatch`], which is applied atomically. Values are bincode 2
//! encoded behind a format-version byte ([`codec`]); keys follow the layout of [`keys`]. A write
//! is durable only once [`Store::flush`] or [`Store::flush_async`] has returned.

pub mod codec;
pub mod error;
pub mod keys;
pub mod records;
pub mod store;

pub use codec::FORMAT_VERSION;
pub use error::{Result, StoreError};
pub use records::*;
pub use store::{AcceptedEvent, IndexEntry, LinkCode, SCHEMA_VERSION, Store, WriteBatch};
