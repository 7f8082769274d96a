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

    /// The store cannot use its files: the disk is full (`No space left on device`), or the
    /// file system answered another I/O error on a write, a flush or a read. A fault of the
    /// environment, neither a server bug nor the client's fault: the API answers it
    /// `503 UNAVAILABLE`, and the store reopens itself once it can write again
    /// (see [`crate::Health`]).
    #[error("the store cannot write: {cause}")]
    Unavailable { cause: std::io::Error },

    /// The embedded database failed otherwise (a sled bug, an unsupported operation).
    #[error("storage error: {0}")]
    Io(sled::Error),

    /// The store violates one of its own invariants (a malformed key, an index entry that
    /// points to a missing record, an exhausted id counter).
    #[error("store is corrupt: {0}")]
    Corrupt(String),
}

/// Classifies sled's errors, once for every caller: an I/O error is the environment's
/// ([`StoreError::Unavailable`]), corruption sled detected is [`StoreError::Corrupt`].
impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        match err {
            sled::Error::Io(cause) => StoreError::Unavailable { cause },
            sled::Error::Corruption { at, .. } => {
                StoreError::Corrupt(format!("sled detected corruption at {at:?}"))
            }
            other => StoreError::Io(other),
        }
    }
}

impl StoreError {
    /// Returns true only for [`StoreError::NotFound`], the one error that means "absent".
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Returns true when the store cannot use its files ([`StoreError::Unavailable`]): the
    /// operation may succeed once the store has recovered, so it is answered "retry later".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Returns the label of the error in `unify_storage_errors_total{kind}`: `no_space` for a
    /// full disk, `io` for any other I/O error, `corrupt`, `codec`, `db` (a sled failure
    /// that is neither), `not_found` and `schema` for completeness.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "not_found",
            StoreError::SchemaMismatch { .. } => "schema",
            StoreError::Codec(_) => "codec",
            StoreError::Unavailable { cause } if is_no_space(cause) => "no_space",
            StoreError::Unavailable { .. } => "io",
            StoreError::Io(_) => "db",
            StoreError::Corrupt(_) => "corrupt",
        }
    }

    /// Returns the `Unavailable` error of a store that has no open database at the moment
    /// (it is being reopened).
    pub(crate) fn reopening() -> Self {
        StoreError::Unavailable {
            cause: std::io::Error::other("the store is being reopened"),
        }
    }

    /// Returns the `NotFound` error of a record kind and id.
    pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}

/// Returns true for "No space left on device" (and a full quota). sled passes its I/O errors
/// on as a copy that keeps the kind but not the OS code, hence both tests.
fn is_no_space(err: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(err.raw_os_error(), Some(ENOSPC | EDQUOT))
        || matches!(
            err.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_unavailable_even_as_sleds_copy() {
        let full = StoreError::from(sled::Error::Io(std::io::Error::from_raw_os_error(28)));
        assert!(full.is_unavailable());
        assert_eq!(full.kind(), "no_space");
        // sled hands its stored error on as a copy with the kind but no OS code.
        let copy = std::io::Error::new(std::io::ErrorKind::StorageFull, "Os { code: 28 }");
        assert_eq!(StoreError::from(sled::Error::Io(copy)).kind(), "no_space");
    }

    #[test]
    fn other_io_errors_are_unavailable_and_corruption_is_not() {
        let eio = StoreError::from(sled::Error::Io(std::io::Error::from_raw_os_error(5)));
        assert!(eio.is_unavailable());
        assert_eq!(eio.kind(), "io");
        let bug = StoreError::from(sled::Error::ReportableBug("x".into()));
        assert!(!bug.is_unavailable());
        assert_eq!(bug.kind(), "db");
        assert!(!StoreError::Corrupt("x".into()).is_unavailable());
        assert!(!StoreError::not_found("member", 1).is_unavailable());
    }
}
