//! The store's handle to sled. Every sled call of the store goes through it, so that each
//! error is classified ([`StoreError::from`]) and counted in one place, the first I/O error
//! turns the store [`Health::Failed`], and a fresh instance of the database can be swapped in.
//!
//! Recovery: on the first I/O error a thread (`store-recovery`) starts. With growing pauses
//! (100 ms, doubling up to 2 s) it writes and fsyncs a probe file of two segments (at least
//! [`PROBE_BYTES`]) in the database's directory; once the file system accepts it, the thread drops the failed
//! instance, opens the database again from what is durable, and turns the store `Ok`. Until
//! the probe succeeds the failed instance stays in place, so reads keep working (sled fails
//! only writes once it has met an I/O error); while the instances are swapped (the old one's
//! file lock must be released before the new one can take it) every call fails with
//! [`StoreError::Unavailable`] instead of blocking.
//!
//! What the failed instance held in memory without having flushed it (a batch whose flush
//! failed) is gone after the reopen, as after a crash; its writer never acknowledged it, and a
//! writer that keeps state in memory discards it when its write fails (a scope actor is
//! restarted from the store once it is `Ok` again, see the supervisor).

use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use sled::IVec;
use tokio::sync::watch;

use crate::error::{Result, StoreError};
use crate::health::{self, Health};

/// sled's page cache. Reads of members are answered from the scopes' memory, so the cache
/// serves little besides the small records; sled's default (1 GiB) would only cost memory.
const CACHE_BYTES: u64 = 128 << 20;

/// sled's segment size for new stores, its largest (16 MiB). sled writes every value above a
/// quarter of a segment to a file of its own, synchronously, and a 512 KiB segment (its
/// default) sends every journal record and event block of a bulk batch down that path.
/// A store keeps the segment size it was created with (sled refuses another one).
const SEGMENT_BYTES: usize = 16 << 20;

/// Least size of the probe file written before a reopen. The probe is two of the store's
/// segments: dropping the failed instance flushes what it buffered, up to a segment, and a
/// flush that meets a full disk again never returns (sled waits for its buffers to become
/// stable); the reopened store then needs room for its next segment.
pub const PROBE_BYTES: usize = 1 << 20;

/// Name of the probe file in the database's directory (sled ignores files it does not know).
const PROBE_FILE: &str = "unify-write-probe";

/// Pause before the first recovery attempt, doubled after each failed one up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// Longest pause between two recovery attempts: writes succeed again within about this long
/// of the disk having room.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long opening waits for a file lock that is still held.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Handle to the database; clones share one instance and one health.
#[derive(Clone)]
pub(crate) struct Db {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// The open instance; `None` only while a failed instance is being replaced.
    current: RwLock<Option<Instance>>,
    /// Generation of the instance in `current`: an error of an instance that was already
    /// replaced (met by an iterator that outlived it) does not fail its successor.
    generation: AtomicU64,
    health: watch::Sender<Health>,
}

struct Instance {
    db: sled::Db,
    generation: u64,
}

impl Db {
    /// Opens the database in directory `path` (see [`open_sled`]).
    pub(crate) fn open(path: &Path) -> Result<Db> {
        let db = open_sled(path)?;
        health::record_state(Health::Ok);
        Ok(Db {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                current: RwLock::new(Some(Instance { db, generation: 0 })),
                generation: AtomicU64::new(0),
                health: watch::Sender::new(Health::Ok),
            }),
        })
    }

    /// Returns whether the store can write.
    pub(crate) fn health(&self) -> Health {
        *self.shared.health.borrow()
    }

    /// Returns a receiver of every change of [`Db::health`].
    pub(crate) fn watch_health(&self) -> watch::Receiver<Health> {
        self.shared.health.subscribe()
    }

    /// Runs `op` on the current instance, classifying its error.
    fn with<T>(&self, op: impl FnOnce(&sled::Db) -> sled::Result<T>) -> Result<T> {
        let current = self.shared.read();
        let Some(instance) = current.as_ref() else {
            return Err(StoreError::reopening());
        };
        op(&instance.db).map_err(|err| self.fault(instance.generation, err))
    }

    /// Classifies and counts a sled error of the instance of `generation`; an I/O error
    /// fails the store.
    fn fault(&self, generation: u64, err: sled::Error) -> StoreError {
        let err = StoreError::from(err);
        health::record_error(&err);
        if err.is_unavailable() {
            self.fail(generation, &err);
        }
        err
    }

    /// Turns the store `Failed` (once) and starts its recovery.
    fn fail(&self, generation: u64, err: &StoreError) {
        if self.shared.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let turned = self.shared.health.send_if_modified(|health| {
            let ok = *health == Health::Ok;
            *health = Health::Failed;
            ok
        });
        if !turned {
            return;
        }
        health::record_state(Health::Failed);
        tracing::error!(path = %self.shared.path.display(), error = %err,
            "the store cannot write; writes fail until it is reopened");
        let shared = Arc::downgrade(&self.shared);
        if let Err(err) = std::thread::Builder::new()
            .name("store-recovery".into())
            .spawn(move || recover(shared))
        {
            tracing::error!(error = %err, "cannot start the store's recovery thread");
        }
    }

    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>> {
        self.with(|db| db.get(key))
    }

    pub(crate) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<IVec>,
    ) -> Result<Option<IVec>> {
        self.with(|db| db.insert(key, value))
    }

    pub(crate) fn apply_batch(&self, batch: sled::Batch) -> Result<()> {
        self.with(|db| db.apply_batch(batch))
    }

    /// Blocks until every write made so far is durable.
    pub(crate) fn flush(&self) -> Result<usize> {
        self.with(|db| db.flush())
    }

    pub(crate) fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        old: Option<impl AsRef<[u8]>>,
        new: Option<impl Into<IVec>>,
    ) -> Result<std::result::Result<(), sled::CompareAndSwapError>> {
        self.with(|db| db.compare_and_swap(key, old, new))
    }

    pub(crate) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        self.iter_with(|db| db.scan_prefix(prefix))
    }

    pub(crate) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        self.iter_with(|db| db.range(range))
    }

    pub(crate) fn iter(&self) -> Iter {
        self.iter_with(|db| db.iter())
    }

    fn iter_with(&self, open: impl FnOnce(&sled::Db) -> sled::Iter) -> Iter {
        let current = self.shared.read();
        let (inner, generation) = match current.as_ref() {
            Some(instance) => (Some(open(&instance.db)), instance.generation),
            None => (None, 0),
        };
        Iter {
            inner,
            generation,
            db: self.clone(),
            done: false,
        }
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Option<Instance>> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Option<Instance>> {
        self.current.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the failed instance by a new one once a probe write succeeds.
    fn reopen(&self) -> Result<()> {
        let room = PROBE_BYTES.max(2 * segment_size(&self.path));
        probe(&self.path, room).map_err(|cause| StoreError::Unavailable { cause })?;
        // Dropped before the new instance is opened (it holds the file lock), and outside the
        // lock: calls meanwhile fail as unavailable instead of waiting for the drop's flush.
        let failed = self.write().take();
        drop(failed);
        let db = open_sled(&self.path)?;
        let mut current = self.write();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *current = Some(Instance { db, generation });
        self.health.send_replace(Health::Ok);
        health::record_state(Health::Ok);
        Ok(())
    }
}

/// Retries [`Shared::reopen`] with growing pauses until it succeeds or the store is dropped.
fn recover(shared: Weak<Shared>) {
    let started = Instant::now();
    let mut pause = RETRY_FIRST;
    let mut attempts = 0u64;
    loop {
        std::thread::sleep(pause);
        pause = (pause * 2).min(RETRY_MAX);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        attempts += 1;
        match shared.reopen() {
            Ok(()) => {
                tracing::warn!(path = %shared.path.display(), attempts,
                    failed_ms = started.elapsed().as_millis() as u64,
                    "the store was reopened and writes again");
                return;
            }
            Err(err) => {
                health::record_error(&err);
                tracing::warn!(path = %shared.path.display(), error = %err, attempts,
                    "the store still cannot write");
            }
        }
    }
}

/// Writes and fsyncs `bytes` in directory `dir`, then removes the file.
fn probe(dir: &Path, bytes: usize) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&vec![0u8; bytes])?;
        file.sync_all()
    });
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}

/// Returns the sled database at `path`, retrying while its file lock is held.
///
/// sled releases its file lock from background threads shortly after the last handle of a
/// database is dropped, so opening retries a held lock for up to [`LOCK_WAIT`]: a close
/// followed by a reopen in the same process (a restart in tests, a recovery) then succeeds,
/// while a store held by another process still fails.
fn open_sled(path: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled_config(path).open() {
            Ok(db) => return Ok(db),
            Err(err) if is_lock_contention(&err) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Returns the sled configuration of the store at `path`; storage tests that read the
/// database raw open it with this too, since sled refuses another segment size.
pub fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_BYTES)
        .segment_size(segment_size(path))
}

/// Returns the segment size of the store at `path` as sled recorded it in its `conf` file, or
/// [`SEGMENT_BYTES`] for a new store.
fn segment_size(path: &Path) -> usize {
    std::fs::read(path.join("conf"))
        .ok()
        .and_then(|conf| {
            String::from_utf8_lossy(&conf)
                .lines()
                .find_map(|line| line.strip_prefix("segment_size: ")?.trim().parse().ok())
        })
        .unwrap_or(SEGMENT_BYTES)
}

/// Returns true for sled's "could not acquire lock" error, which has no variant of its own.
fn is_lock_contention(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::Other
            && io.to_string().contains("could not acquire lock"))
}

/// An iterator over the current instance; its errors are classified like every other call.
pub(crate) struct Iter {
    /// `None` when no instance was open: the iterator yields one `Unavailable` error.
    inner: Option<sled::Iter>,
    generation: u64,
    db: Db,
    /// Set once the iterator has yielded its error or its end.
    done: bool,
}

impl Iter {
    /// Returns the keys only.
    pub(crate) fn keys(self) -> impl DoubleEndedIterator<Item = Result<IVec>> {
        self.map(|item| item.map(|(key, _)| key))
    }

    fn step(
        &mut self,
        next: impl FnOnce(&mut sled::Iter) -> Option<sled::Result<(IVec, IVec)>>,
    ) -> Option<Result<(IVec, IVec)>> {
        if self.done {
            return None;
        }
        let Some(inner) = self.inner.as_mut() else {
            self.done = true;
            return Some(Err(StoreError::reopening()));
        };
        match next(inner)? {
            Ok(item) => Some(Ok(item)),
            Err(err) => {
                self.done = true;
                Some(Err(self.db.fault(self.generation, err)))
            }
        }
    }
}

impl Iterator for Iter {
    type Item = Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(|inner| inner.next())
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(|inner| inner.next_back())
    }
}
