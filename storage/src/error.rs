//! The error type of the storage crate.
//!
//! "Not found" is its own variant and is returned only when a key is really absent: a record
//! that cannot be decoded, or a failure of the embedded database, is never reported as absent,
//! so that callers never answer "no such member" for a store that is merely broken.

/// Result of every fallible storage operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Why a storage operation failed.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// The requested record does not exist. `kind` names the record kind (`member`, `org`, ...)
    /// and `id` its key, so that the API layer can report which one was missing.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },

    /// The store on disk was written with another schema version (`found` is 0 when the store
    /// holds records but no version at all). Opening is refused rather than misreading data.
    #[error("store schema version {found} does not match the version {expected} of this build")]
    SchemaMismatch { found: u32, expected: u32 },

    /// A stored value could not be encoded or decoded (unknown format version, truncated or
    /// trailing bytes, invalid contents).
    #[error("codec error: {0}")]
    Codec(String),

    /// The embedded database failed (I/O error, corruption detected by sled, sled bug).
    #[error("storage error: {0}")]
    Io(#[from] sled::Error),

    /// The store violates one of its own invariants (a malformed key, an index entry that
    /// points to a missing record, an exhausted id counter).
    #[error("store is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Returns true only for [`StoreError::NotFound`], the one error that means "absent".
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Returns the `NotFound` error of a record kind and id.
    pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}
