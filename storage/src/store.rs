//! The sled-backed store: opening and schema checks, id allocation, atomic batches of domain
//! records, and typed reads.
//!
//! Durability: a write (an applied [`WriteBatch`] or an allocated id) is visible to readers at
//! once but is **not durable until a flush** ([`Store::flush`] or [`Store::flush_async`])
//! returns. Callers acknowledge nothing before that flush; several batches may share one flush
//! (group commit).

use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod db;
mod events;
mod member_log;
mod migrate;
mod webhooks;

pub use db::{LOCK_WAIT, PROBE_BYTES, sled_config};
pub use events::EventBlockSpan;

pub use webhooks::{AcceptedEvent, LinkCode};

use crate::codec;
use crate::error::{Result, StoreError};
use crate::health::Health;
use crate::keys;
use crate::records::{
    Account, Channel, DeliveryRecord, Id, IdKind, ImportJob, Org, OutboxEntry, ScopeRecord,
};

/// Schema version of the key layout and records, stored in the meta record. A store of
/// version 1 is migrated at open (`store/migrate.rs`); any other version is refused instead of
/// being misread.
pub const SCHEMA_VERSION: u32 = 2;

/// Handle to the embedded database. Cheap to clone: clones share one sled instance.
#[derive(Clone)]
pub struct Store {
    /// The sled database; every record lives in its default tree (see [`crate::keys`]). Every
    /// call goes through [`db::Db`], which classifies errors and reopens a failed database.
    db: db::Db,
    /// Directory of the database, kept for diagnostics.
    path: Arc<PathBuf>,
    /// Held while a snapshot is written and while an org's log is read, so that two writers
    /// (a scope's task and the task of the scope's previous incarnation) never write one
    /// generation at once, and a reader never meets a manifest whose chunks a writer is
    /// about to replace.
    snapshots: Arc<std::sync::Mutex<()>>,
}

impl fmt::Debug for Store {
    /// Formats the path only: sled's own `Debug` dumps the whole tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// A new, empty store gets the current [`SCHEMA_VERSION`], flushed at once. A store of
    /// version 1 is migrated first (`store/migrate.rs`). A store with another version, or with
    /// records but no version, is refused with [`StoreError::SchemaMismatch`]. The id counters are then raised to at least the largest
    /// id in use, which covers a crash after records were flushed but before their counter was.
    ///
    /// sled releases its file lock from background threads shortly after the last handle of a
    /// database is dropped, so opening retries a held lock for up to [`LOCK_WAIT`]: a close
    /// followed by a reopen in the same process (a restart in tests) then succeeds, while a
    /// store held by another process still fails.
    pub fn open(path: &Path) -> Result<Store> {
        let db = db::Db::open(path)?;
        let store = Store {
            db,
            path: Arc::new(path.to_path_buf()),
            snapshots: Arc::default(),
        };
        store.check_schema()?;
        store.reconcile_counters()?;
        Ok(store)
    }

    /// Takes the lock that orders snapshot writes and org log reads. A poisoned lock only
    /// means another holder panicked; what it left is overwritten or removed by the next one.
    fn snapshot_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns the directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns whether the store can write: `Failed` from its first I/O error until it has
    /// reopened itself (see [`crate::health`]).
    pub fn health(&self) -> Health {
        self.db.health()
    }

    /// Returns a receiver of every change of [`Store::health`] (the supervisor restarts the
    /// scopes that failed once the store is `Ok` again).
    pub fn watch_health(&self) -> tokio::sync::watch::Receiver<Health> {
        self.db.watch_health()
    }

    /// Checks the stored schema version, writing it into a store that is still empty.
    fn check_schema(&self) -> Result<()> {
        match self.db.get(keys::SCHEMA_VERSION_KEY)? {
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| {
                        StoreError::Corrupt(format!("malformed schema version {bytes:?}"))
                    })?;
                if found == 1 {
                    migrate::from_v1(self)?;
                    return Ok(());
                }
                if found != SCHEMA_VERSION {
                    return Err(StoreError::SchemaMismatch {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
            // `Tree::is_empty` would take a read error for "not empty"; this propagates it.
            None if self.db.iter().next().transpose()?.is_none() => {
                self.db
                    .insert(keys::SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.db.flush()?;
                tracing::info!(path = %self.path.display(), schema_version = SCHEMA_VERSION, "initialized new store");
            }
            None => {
                return Err(StoreError::SchemaMismatch {
                    found: 0,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        Ok(())
    }

    /// Raises every id counter to at least the largest id of its kind found in the store.
    fn reconcile_counters(&self) -> Result<()> {
        for kind in keys::ID_KINDS {
            self.raise_counter(kind, self.max_id_in_use(kind)?)?;
        }
        Ok(())
    }

    /// Returns the last id allocated of `kind` (0 if none), for `unify verify`.
    pub fn counter_value(&self, kind: IdKind) -> Result<u64> {
        self.counter(kind)
    }

    /// Returns the current value of the counter of `kind` (the last allocated id, 0 if none).
    fn counter(&self, kind: IdKind) -> Result<u64> {
        match self.db.get(keys::counter(kind))? {
            Some(bytes) => keys::u64_value(&bytes),
            None => Ok(0),
        }
    }

    /// Returns the largest id of `kind` used by a stored record (0 if none).
    fn max_id_in_use(&self, kind: IdKind) -> Result<u64> {
        let prefix = match kind {
            IdKind::Account => keys::ACCOUNT,
            IdKind::Org => keys::ORG,
            IdKind::Channel => keys::CHANNEL,
            // Members have no key of their own: a scope raises the counter to its largest
            // member when it loads (`Store::raise_counter`).
            IdKind::Member => return Ok(0),
            IdKind::Scope => keys::SCOPE,
            IdKind::UnifyKey => {
                let mut max = 0;
                for scope in self.list_scopes()? {
                    max = scope.keys.iter().map(|k| k.id).fold(max, u64::max);
                }
                return Ok(max);
            }
            IdKind::Job => keys::IMPORT_JOB,
        };
        match self.db.scan_prefix([prefix]).next_back().transpose()? {
            Some((key, _)) => keys::read_u64(&key, 1),
            None => Ok(0),
        }
    }

    /// Returns `n` fresh ids of `kind`: ids start at 1, strictly increase and are never handed
    /// out twice, even across a close and reopen.
    ///
    /// The counter is advanced with compare-and-swap, so concurrent callers get disjoint
    /// ranges. It becomes durable with the next flush; should the process crash before that,
    /// reconciliation at open restores it from the records that did become durable.
    pub fn allocate_ids(&self, kind: IdKind, n: u64) -> Result<Range<Id>> {
        let last = self.advance_counter(kind, |last| {
            if n == 0 {
                return Ok(None);
            }
            last.checked_add(n)
                .filter(|next| *next < u64::MAX)
                .map(Some)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("id counter of {kind:?} exhausted at {last}"))
                })
        })?;
        Ok(last + 1..last + 1 + n)
    }

    /// Raises the counter of `kind` to at least `id`, so that no id in use is handed out again.
    pub fn raise_counter(&self, kind: IdKind, id: Id) -> Result<()> {
        let stored = self.advance_counter(kind, |last| Ok((last < id).then_some(id)))?;
        if stored < id {
            tracing::warn!(kind = ?kind, stored, in_use = id, "id counter behind stored records, raising it");
        }
        Ok(())
    }

    /// Moves the counter of `kind` from its value `last` to `next(last)` with compare-and-swap,
    /// retrying when a concurrent caller moved it first; `None` leaves it as it is. Returns the
    /// `last` it moved from.
    fn advance_counter(
        &self,
        kind: IdKind,
        next: impl Fn(u64) -> Result<Option<u64>>,
    ) -> Result<u64> {
        let key = keys::counter(kind);
        loop {
            let current = self.db.get(key)?;
            let last = match &current {
                Some(bytes) => keys::u64_value(bytes)?,
                None => 0,
            };
            let Some(next) = next(last)? else {
                return Ok(last);
            };
            if self
                .db
                .compare_and_swap(key, current, Some(&next.to_be_bytes()[..]))?
                .is_ok()
            {
                return Ok(last);
            }
        }
    }

    /// Applies every operation of `batch` atomically: after a crash either all of them or none
    /// are present. Durable only after the next flush.
    pub fn apply(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.db.apply_batch(batch.inner)?;
        Ok(())
    }

    /// Blocks until every write made so far is durable (written and fsynced).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Makes every write made so far durable without blocking the calling task: the
    /// synchronous flush runs on tokio's blocking pool. (sled's own `flush_async` parks one of
    /// sled's few shared IO threads per call; enough concurrent calls take them all and the
    /// write they wait for never runs.)
    pub async fn flush_async(&self) -> Result<()> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(flushed) => {
                flushed?;
                Ok(())
            }
            Err(join) => Err(StoreError::Unavailable {
                cause: std::io::Error::other(format!("the flush task failed: {join}")),
            }),
        }
    }

    /// Test-only hook that writes raw bytes under a raw key, bypassing the codec, so that tests
    /// can simulate corrupted records.
    #[doc(hidden)]
    pub fn raw_insert_for_tests(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.insert(key, value)?;
        Ok(())
    }

    // ----- reads by id ---------------------------------------------------------------------

    /// Returns the decoded record under `key`, or `NotFound` naming `kind` and `id`.
    fn get_record<T: DeserializeOwned>(&self, key: &[u8], kind: &'static str, id: Id) -> Result<T> {
        match self.db.get(key)? {
            Some(bytes) => codec::decode(&bytes),
            None => Err(StoreError::not_found(kind, id)),
        }
    }

    /// Returns the account `id`.
    pub fn get_account(&self, id: Id) -> Result<Account> {
        self.get_record(&keys::account(id), "account", id)
    }

    /// Returns the org `id`.
    pub fn get_org(&self, id: Id) -> Result<Org> {
        self.get_record(&keys::org(id), "org", id)
    }

    /// Returns the channel `id`.
    pub fn get_channel(&self, id: Id) -> Result<Channel> {
        self.get_record(&keys::channel(id), "channel", id)
    }

    /// Returns the scope `id`.
    pub fn get_scope(&self, id: Id) -> Result<ScopeRecord> {
        self.get_record(&keys::scope(id), "scope", id)
    }

    /// Returns the import job `id`.
    pub fn get_import_job(&self, id: Id) -> Result<ImportJob> {
        self.get_record(&keys::import_job(id), "import job", id)
    }

    /// Returns every import job, ascending id (to resume the running ones at start).
    pub fn list_import_jobs(&self) -> Result<Vec<ImportJob>> {
        self.scan_values(&[keys::IMPORT_JOB])
    }

    // ----- listings ------------------------------------------------------------------------

    /// Returns the decoded values of every record under `prefix`, in key order.
    fn scan_values<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>> {
        self.db
            .scan_prefix(prefix)
            .map(|item| {
                let (_, value) = item?;
                codec::decode(&value)
            })
            .collect()
    }

    /// Returns the decoded values of at most `limit` records in `range`, in key order.
    fn range_values<T: DeserializeOwned>(
        &self,
        range: RangeInclusive<[u8; 17]>,
        limit: usize,
    ) -> Result<Vec<T>> {
        self.db
            .range(range)
            .take(limit)
            .map(|item| {
                let (_, value) = item?;
                codec::decode(&value)
            })
            .collect()
    }

    /// Returns the number of keys under `prefix`.
    fn count_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let mut count = 0;
        for item in self.db.scan_prefix(prefix).keys() {
            item?;
            count += 1;
        }
        Ok(count)
    }

    /// Returns every account, ascending id.
    pub fn list_accounts(&self) -> Result<Vec<Account>> {
        self.scan_values(&[keys::ACCOUNT])
    }

    /// Returns true when at least one account exists (the first start prints a root token
    /// otherwise).
    pub fn has_accounts(&self) -> Result<bool> {
        Ok(self
            .db
            .scan_prefix([keys::ACCOUNT])
            .next()
            .transpose()?
            .is_some())
    }

    /// Returns every org, ascending id.
    pub fn list_orgs(&self) -> Result<Vec<Org>> {
        self.scan_values(&[keys::ORG])
    }

    /// Returns the orgs of account `account_id`, ascending id. Scans all orgs: an account has
    /// at most one org per source, and a deployment has few accounts.
    pub fn orgs_of_account(&self, account_id: Id) -> Result<Vec<Org>> {
        let mut orgs = self.list_orgs()?;
        orgs.retain(|org| org.account_id == account_id);
        Ok(orgs)
    }

    /// Returns the channels of org `org_id`, ascending id.
    pub fn channels_of_org(&self, org_id: Id) -> Result<Vec<Channel>> {
        let mut channels: Vec<Channel> = self.scan_values(&[keys::CHANNEL])?;
        channels.retain(|channel| channel.org_id == org_id);
        Ok(channels)
    }

    /// Returns every scope, ascending id.
    pub fn list_scopes(&self) -> Result<Vec<ScopeRecord>> {
        self.scan_values(&[keys::SCOPE])
    }

    // ----- outbox and dead letters ----------------------------------------------------------

    /// Returns the first `limit` outbox entries of scope `scope_id`, ascending seq: the next
    /// batch to deliver.
    pub fn outbox_head(&self, scope_id: Id, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.range_values(
            keys::outbox(scope_id, 0)..=keys::outbox(scope_id, u64::MAX),
            limit,
        )
    }

    /// Returns the number of entries in the outbox of scope `scope_id`.
    pub fn outbox_len(&self, scope_id: Id) -> Result<u64> {
        self.count_prefix(&keys::id_key(keys::OUTBOX, scope_id))
    }

    /// Returns the scopes whose outbox is not empty, ascending. Seeks from one scope to the
    /// next instead of reading every entry.
    pub fn outbox_scopes(&self) -> Result<Vec<Id>> {
        self.leading_ids(keys::OUTBOX)
    }

    /// Returns the distinct ids that follow `prefix` in its keys (the scope or org each key
    /// belongs to), ascending. Seeks from one id to the next instead of reading every key.
    pub(crate) fn leading_ids(&self, prefix: u8) -> Result<Vec<Id>> {
        let mut ids = Vec::new();
        let mut from = keys::id_key(prefix, 0);
        let end = [prefix + 1];
        while let Some((key, _)) = self
            .db
            .range(from.as_slice()..end.as_slice())
            .next()
            .transpose()?
        {
            let id = keys::read_u64(&key, 1)?;
            ids.push(id);
            let Some(next) = id.checked_add(1) else {
                break;
            };
            from = keys::id_key(prefix, next);
        }
        Ok(ids)
    }

    /// Returns the dead-lettered entries of scope `scope_id`, ascending seq.
    pub fn dead_entries(&self, scope_id: Id) -> Result<Vec<OutboxEntry>> {
        self.scan_values(&keys::id_key(keys::DEAD, scope_id))
    }

    /// Returns the number of dead-lettered entries of scope `scope_id`.
    pub fn dead_len(&self, scope_id: Id) -> Result<u64> {
        self.count_prefix(&keys::id_key(keys::DEAD, scope_id))
    }

    /// Returns at most `limit` outbox entries of scope `scope_id` with a seq of at least
    /// `from_seq`, ascending seq.
    pub fn outbox_from(
        &self,
        scope_id: Id,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        self.range_values(
            keys::outbox(scope_id, from_seq)..=keys::outbox(scope_id, u64::MAX),
            limit,
        )
    }

    /// Returns the CDH delivery state of scope `scope_id`; `None` before its first delivery.
    pub fn get_delivery(&self, scope_id: Id) -> Result<Option<DeliveryRecord>> {
        self.db
            .get(keys::delivery(scope_id))?
            .map(|bytes| codec::decode(&bytes))
            .transpose()
    }
}

/// A set of writes applied atomically by [`Store::apply`]. Domain-typed so that callers never
/// build keys themselves and every member write keeps its indexes in step.
///
/// Operations on the same key keep only the last one, so an update that moves a member's
/// indexes is written as `delete_member(&old)` followed by `put_member(&new)` in one batch.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// The underlying sled batch.
    inner: sled::Batch,
    /// Number of operations recorded, for group-commit sizing and `is_empty`.
    ops: usize,
}

impl WriteBatch {
    /// Returns an empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the number of key operations recorded (a member write counts each index).
    pub fn len(&self) -> usize {
        self.ops
    }

    /// Returns true when the batch records no operation.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.inner.insert(key, value);
        self.ops += 1;
        self
    }

    fn insert_record<T: Serialize>(&mut self, key: &[u8], record: &T) -> &mut Self {
        self.insert(key, &codec::encode(record))
    }

    fn remove(&mut self, key: &[u8]) -> &mut Self {
        self.inner.remove(key);
        self.ops += 1;
        self
    }

    /// Writes an account.
    pub fn put_account(&mut self, account: &Account) -> &mut Self {
        self.insert_record(&keys::account(account.id), account)
    }

    /// Writes an org.
    pub fn put_org(&mut self, org: &Org) -> &mut Self {
        self.insert_record(&keys::org(org.id), org)
    }

    /// Writes a channel.
    pub fn put_channel(&mut self, channel: &Channel) -> &mut Self {
        self.insert_record(&keys::channel(channel.id), channel)
    }

    /// Writes a scope.
    pub fn put_scope(&mut self, scope: &ScopeRecord) -> &mut Self {
        self.insert_record(&keys::scope(scope.id), scope)
    }

    /// Writes an import job.
    pub fn put_import_job(&mut self, job: &ImportJob) -> &mut Self {
        self.insert_record(&keys::import_job(job.id), job)
    }

    /// Removes a scope (its events and outbox are removed separately).
    pub fn delete_scope(&mut self, scope_id: Id) -> &mut Self {
        self.remove(&keys::scope(scope_id))
    }

    /// Writes an outbox entry (a new one, or one whose attempts changed).
    pub fn put_outbox(&mut self, entry: &OutboxEntry) -> &mut Self {
        self.insert_record(&keys::outbox(entry.scope_id, entry.seq), entry)
    }

    /// Removes a delivered (or dead-lettered) outbox entry.
    pub fn delete_outbox(&mut self, scope_id: Id, seq: u64) -> &mut Self {
        self.remove(&keys::outbox(scope_id, seq))
    }

    /// Writes a dead-lettered entry.
    pub fn put_dead(&mut self, entry: &OutboxEntry) -> &mut Self {
        self.insert_record(&keys::dead(entry.scope_id, entry.seq), entry)
    }

    /// Removes a dead-lettered entry (requeued or discarded).
    pub fn delete_dead(&mut self, scope_id: Id, seq: u64) -> &mut Self {
        self.remove(&keys::dead(scope_id, seq))
    }

    /// Writes a scope's CDH delivery state.
    pub fn put_delivery(&mut self, record: &DeliveryRecord) -> &mut Self {
        self.insert_record(&keys::delivery(record.scope_id), record)
    }
}
