//! Persistent storage of unify: domain records (accounts, orgs, channels, scopes, the CDH
//! outbox), members as per-org snapshots and journals, and event blocks, in an embedded `sled`
//! database.
//!
//! Nothing outside this crate touches sled: callers read domain types through [`Store`] and
//! write them through a [`WriteBatch`], which is applied atomically. Values are bincode 2
//! encoded behind a format-version byte ([`codec`]); keys follow the layout of [`keys`]. A write
//! is durable only once [`Store::flush`] or [`Store::flush_async`] has returned.

pub mod codec;
pub mod error;
pub mod health;
pub mod journal;
pub mod keys;
pub mod records;
pub mod store;
pub mod stored_member;

pub use codec::FORMAT_VERSION;
pub use error::{Result, StoreError};
pub use health::Health;
pub use journal::{MemberLog, MemberWrite, OrgLog, SnapshotManifest};
pub use records::*;
pub use store::{AcceptedEvent, EventBlockSpan, LinkCode, SCHEMA_VERSION, Store, WriteBatch};
pub use stored_member::{DraftFields, MemberDraft, MemberOutline, StoredMember};
