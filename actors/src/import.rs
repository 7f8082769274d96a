//! Bulk import (SPEC 4.4 `POST /chat/members/import`) as a durable background job.
//!
//! [`start`] streams the NDJSON body to a spool file next to the store (never holding the body
//! in memory), fsyncs it, writes the [`ImportJob`] record and spawns the driver. The driver
//! reads the spool in chunks on a blocking thread: it parses each non-empty line into a
//! [`NewMember`] and normalizes its linking values there, off the scope actor, while the scope
//! applies the previous chunk. The scope applies a chunk's members, their `import` events, a
//! `merge_progress` event and the updated job record (counts, errors, spool position) in one
//! atomic batch with one flush, so after a crash the job resumes at the first line not applied
//! and every line is applied exactly once.
//!
//! Imports bypass member actors: each line creates a member or finds the existing one by
//! identity inside the scope actor, which serializes it with every other create of the scope,
//! and a member actor would only add a hop per line.
//!
//! The import service owns the running drivers ([`Imports`]). It may call the scope client
//! (a chunk is a `protocol` message, answered within its own timeout); it never imports the
//! runtime.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use unify_storage::{Id, IdKind, ImportJob, ImportStatus, Store, StoreError, WriteBatch};

use crate::clock::now_millis;
use crate::engine::{ATTRIBUTE_COUNT, Attribute, LinkValues, Normalizer};
use crate::error::{Code, OpError, found};
use crate::input::parse_member;
use crate::links::raw_value;
use crate::ops::NewMember;
use crate::protocol::import::line_error;
use crate::protocol::{ImportChunk, Prepared, ScopeMsg};
use crate::scope_client::{ImportGuard, ScopeClient};

/// Most lines per chunk. Larger chunks are no faster (the store's write path dominates) but
/// hold far more memory: 50k-line chunks doubled the peak RSS of a 200k-member import.
pub const MAX_CHUNK: usize = 5_000;

/// Chunks a driver keeps sent and unanswered: two, so that the scope applies one while the
/// store writes the other.
const AHEAD: usize = 2;

/// Longest wait for the scope to apply one chunk; a chunk that is answered later is detected
/// by its position and not applied twice.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest wait for a failed scope's last commit lane before a job failure is written beside
/// the scope (see `fail`).
const LANE_WAIT: Duration = Duration::from_secs(5);

/// Returns the linking values of a member to create; equal to those of the member record it
/// becomes (a new member is never under manual unification).
pub fn new_member_links(normalizer: &Normalizer, m: &NewMember) -> LinkValues {
    let raw: [Option<&str>; ATTRIBUTE_COUNT] =
        std::array::from_fn(|i| raw_value(m, &m.external_member_id, Attribute::ALL[i]));
    LinkValues::normalize(normalizer, &raw, false)
}

/// Returns the directory of import spool files: `imports/` beside the store directory.
pub fn spool_dir(store: &Store) -> PathBuf {
    let path = store.path();
    path.parent().unwrap_or(path).join("imports")
}

fn spool_path(store: &Store, job_id: Id) -> PathBuf {
    spool_dir(store).join(format!("{job_id}.ndjson"))
}

/// The running import drivers, stopped together at shutdown.
#[derive(Debug)]
pub struct Imports {
    client: Arc<ScopeClient>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    running: Arc<RunningJobs>,
}

/// The jobs driven by this process, each as its last applied chunk left it. A chunk's job
/// record can be read from the store as soon as the scope has applied its batch, before the
/// batch is flushed and its members are published; the status of a running job is answered
/// from here, so it never reports lines that are not yet durable and served.
#[derive(Debug, Default)]
struct RunningJobs(std::sync::Mutex<HashMap<Id, ImportJob>>);

impl RunningJobs {
    fn get(&self, job_id: Id) -> Option<ImportJob> {
        let jobs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.get(&job_id).cloned()
    }

    fn set(&self, job: &ImportJob) {
        let mut jobs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.insert(job.id, job.clone());
    }

    /// Forgets a job whose driver ended: its last record is durable by then (a chunk is
    /// answered after its flush, a failure is recorded with one), so the store answers.
    fn remove(&self, job_id: Id) {
        let mut jobs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.remove(&job_id);
    }
}

/// Removes a job from [`RunningJobs`] when dropped.
struct Forget(Arc<RunningJobs>, Id);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

impl Imports {
    pub fn new(client: Arc<ScopeClient>) -> Imports {
        Imports {
            client,
            stop: watch::channel(false).0,
            tasks: Mutex::default(),
            running: Arc::default(),
        }
    }

    /// Spawns the driver of a job.
    async fn spawn(&self, job: ImportJob) {
        let stop = self.stop.subscribe();
        // Taken before the task starts, so the merge state is unfinished once the job exists.
        let guard = self.client.import_guard(job.org_id);
        self.running.set(&job);
        let (client, running) = (self.client.clone(), self.running.clone());
        let task = tokio::spawn(async move {
            // Forgotten however the driver ends, a panic included.
            let _forget = Forget(running.clone(), job.id);
            drive(client, job, stop, guard, &running).await;
        });
        let mut tasks = self.tasks.lock().await;
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Resumes every running job of the store and removes the spools of ended ones.
    pub async fn resume(&self) -> Result<(), OpError> {
        let store = self.client.store();
        for job in store.list_import_jobs()? {
            if job.status == ImportStatus::Running {
                tracing::info!(
                    job_id = job.id,
                    org_id = job.org_id,
                    done = job.done,
                    "resuming import"
                );
                self.spawn(job).await;
            } else {
                let _ = std::fs::remove_file(spool_path(store, job.id));
            }
        }
        Ok(())
    }

    /// Spools the body, writes the job record and spawns its driver; returns the job id.
    pub async fn start<S, B, E>(&self, org_id: Id, body: S) -> Result<Id, OpError>
    where
        S: Stream<Item = Result<B, E>> + Send + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let store = self.client.store();
        found(store.get_org(org_id), "organization")?;
        let job_id = store.allocate_ids(IdKind::Job, 1)?.start;
        let path = spool_path(store, job_id);
        let total = match spool(&path, body).await {
            Ok(total) => total,
            Err(err) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(err);
            }
        };
        let now = now_millis();
        let job = ImportJob {
            id: job_id,
            org_id,
            status: ImportStatus::Running,
            total,
            done: 0,
            failed: 0,
            errors: Vec::new(),
            position: 0,
            lines: 0,
            failure: None,
            created_at: now,
            updated_at: now,
        };
        let mut batch = WriteBatch::new();
        batch.put_import_job(&job);
        store.apply(batch)?;
        store.flush_async().await?;
        self.spawn(job).await;
        Ok(job_id)
    }

    /// Returns an org's import job.
    pub fn status(&self, org_id: Id, job_id: Id) -> Result<ImportJob, OpError> {
        let job = match self.running.get(job_id) {
            Some(job) => job,
            None => found(self.client.store().get_import_job(job_id), "import job")?,
        };
        if job.org_id != org_id {
            return Err(OpError::NotFound("import job"));
        }
        Ok(job)
    }

    /// Stops every driver after the chunk it is applying; their jobs resume at the next start.
    pub async fn stop_all(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().await);
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Writes the body to `path` and fsyncs it (and its directory); returns the number of
/// non-empty lines.
async fn spool<S, B, E>(path: &Path, mut body: S) -> Result<u64, OpError>
where
    S: Stream<Item = Result<B, E>> + Send + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    use tokio::io::AsyncWriteExt;
    // The spool lives in the data directory: a full disk there is the store's fault too.
    let io = |e: std::io::Error| {
        OpError::Storage(StoreError::Unavailable {
            cause: std::io::Error::new(e.kind(), format!("writing the import spool: {e}")),
        })
    };
    let dir = path.parent().unwrap_or(path);
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut lines = LineCounter::default();
    while let Some(part) = body.next().await {
        let part =
            part.map_err(|e| OpError::invalid(format!("the body could not be read: {e}")))?;
        let bytes = part.as_ref();
        lines.feed(bytes);
        out.write_all(bytes).await.map_err(io)?;
    }
    out.flush().await.map_err(io)?;
    out.into_inner().sync_all().await.map_err(io)?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| OpError::Unavailable(e.to_string()))?
        .map_err(io)?;
    Ok(lines.finish())
}

/// Counts non-empty (not only whitespace) lines of a byte stream fed in pieces.
#[derive(Debug, Default)]
struct LineCounter {
    lines: u64,
    current_has_content: bool,
}

impl LineCounter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(at) = bytes.iter().position(|&b| b == b'\n') {
            if self.current_has_content || has_content(&bytes[..at]) {
                self.lines += 1;
            }
            self.current_has_content = false;
            bytes = &bytes[at + 1..];
        }
        self.current_has_content |= has_content(bytes);
    }

    fn finish(self) -> u64 {
        self.lines + u64::from(self.current_has_content)
    }
}

fn has_content(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| !b.is_ascii_whitespace())
}

/// The longest import line (one member object), as a request body: a longer line is refused
/// with `PAYLOAD_TOO_LARGE` and skipped without being held in memory.
const MAX_LINE: usize = 1024 * 1024;

/// Reads the spool from a position, line by line.
struct SpoolReader {
    reader: BufReader<std::fs::File>,
    position: u64,
    lines: u64,
    buf: Vec<u8>,
}

impl SpoolReader {
    fn open(path: &Path, position: u64, lines: u64) -> std::io::Result<SpoolReader> {
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(position))?;
        Ok(SpoolReader {
            reader: BufReader::with_capacity(1 << 20, file),
            position,
            lines,
            buf: Vec::new(),
        })
    }

    /// Consumes the rest of the current line without keeping it; returns the bytes consumed.
    fn skip_line(&mut self) -> std::io::Result<usize> {
        let mut skipped = 0;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(skipped);
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.reader.consume(i + 1);
                    return Ok(skipped + i + 1);
                }
                None => {
                    let n = available.len();
                    self.reader.consume(n);
                    skipped += n;
                }
            }
        }
    }

    /// Reads up to `max` non-empty lines, parsed and normalized.
    fn chunk(
        &mut self,
        job_id: Id,
        max: usize,
        normalizer: &Normalizer,
    ) -> std::io::Result<ImportChunk> {
        let from = self.position;
        let mut members = Vec::with_capacity(max.min(1 << 16));
        let mut refused = Vec::new();
        let mut taken = 0;
        let mut last = false;
        while taken < max {
            self.buf.clear();
            let mut read = (&mut self.reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.buf)?;
            if read == 0 {
                last = true;
                break;
            }
            let oversized = self.buf.len() > MAX_LINE;
            if oversized {
                read += self.skip_line()?;
            }
            self.position += read as u64;
            self.lines += 1;
            if oversized {
                taken += 1;
                refused.push(line_error(
                    self.lines,
                    &OpError::conflict(
                        Code::PayloadTooLarge,
                        format!("a line is limited to {MAX_LINE} bytes"),
                    ),
                ));
                continue;
            }
            if !has_content(&self.buf) {
                continue;
            }
            taken += 1;
            match parse_member(&self.buf) {
                Ok(member) => {
                    let links = new_member_links(normalizer, &member);
                    members.push(Prepared::new(self.lines, member, links, normalizer));
                }
                Err(err) => refused.push(line_error(self.lines, &err)),
            }
        }
        if !last && self.reader.fill_buf()?.is_empty() {
            last = true;
        }
        Ok(ImportChunk {
            job_id,
            from,
            to: self.position,
            lines: self.lines,
            last,
            members,
            refused,
        })
    }
}

/// Drives a job to its end (or until `stop`): chunk after chunk, preparing the next one while
/// the scope applies the current one.
async fn drive(
    client: Arc<ScopeClient>,
    job: ImportJob,
    stop: watch::Receiver<bool>,
    _guard: ImportGuard,
    running: &RunningJobs,
) {
    let job_id = job.id;
    let path = spool_path(client.store(), job_id);
    let reader = match SpoolReader::open(&path, job.position, job.lines) {
        Ok(reader) => reader,
        Err(err) => {
            fail(
                &client,
                job,
                format!("the spooled body is unreadable: {err}"),
            )
            .await;
            return;
        }
    };
    let chunk_size = client.settings().import_chunk.clamp(1, MAX_CHUNK);
    let prepare = |mut reader: SpoolReader, client: Arc<ScopeClient>| {
        tokio::task::spawn_blocking(move || {
            let chunk = reader.chunk(job_id, chunk_size, &client.settings().normalizer);
            (reader, chunk)
        })
    };
    let mut next = Some(prepare(reader, client.clone()));
    let mut job = job;
    // Chunks sent and not answered yet, oldest first: the scope unifies one while its commit
    // lane writes the one before. Answers are taken in order.
    let mut sent = Sent::default();
    loop {
        while sent.len() < AHEAD
            && let Some(pending) = next.take()
        {
            let (reader, chunk) = match pending.await {
                Ok((reader, Ok(chunk))) => (reader, chunk),
                Ok((_, Err(err))) => {
                    settle(sent).await;
                    fail(&client, job, format!("reading the spooled body: {err}")).await;
                    return;
                }
                Err(err) => {
                    tracing::error!(job_id, error = %err, "import chunk preparation failed");
                    return;
                }
            };
            if !chunk.last {
                next = Some(prepare(reader, client.clone()));
            }
            let (client, mut stop) = (client.clone(), stop.clone());
            let org_id = job.org_id;
            sent.push_back(tokio::spawn(async move {
                apply(&client, org_id, chunk, &mut stop).await
            }));
        }
        let Some(oldest) = sent.pop_front() else {
            break;
        };
        match oldest.await {
            Ok(Applied::Job(updated)) => {
                running.set(&updated);
                job = updated;
            }
            Ok(Applied::Stopped) => return,
            Ok(Applied::Failed(err)) => {
                // No chunk sent behind it is applied: the scope refuses a chunk that starts
                // past the job's position (and would keep refusing it).
                drop(sent);
                fail(&client, job, err.to_string()).await;
                return;
            }
            Err(err) => {
                tracing::error!(job_id, error = %err, "import chunk task failed");
                return;
            }
        }
        if job.status != ImportStatus::Running {
            break;
        }
        if *stop.borrow() {
            return;
        }
    }
    if job.status == ImportStatus::Finished {
        tracing::info!(
            job_id,
            done = job.done,
            failed = job.failed,
            "import finished"
        );
        let _ = tokio::fs::remove_file(&path).await;
    }
}

/// Waits for the answers of chunks sent before a chunk that could not be read: they are
/// applied (or not) before the job is marked failed. Once one is not applied, none behind it
/// can be (the scope refuses a chunk past the job's position, and would keep refusing it).
async fn settle(mut sent: Sent) {
    while let Some(chunk) = sent.pop_front() {
        if !matches!(chunk.await, Ok(Applied::Job(_))) {
            return;
        }
    }
}

/// The chunk tasks of a driver, sent and not answered yet, oldest first. Those left when the
/// driver ends, however it ends, are aborted: none keeps retrying a chunk for a driver that
/// is gone (a chunk already in the scope's mailbox is still applied, with its job record).
#[derive(Default)]
struct Sent(VecDeque<JoinHandle<Applied>>);

impl Sent {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn push_back(&mut self, chunk: JoinHandle<Applied>) {
        self.0.push_back(chunk);
    }

    fn pop_front(&mut self) -> Option<JoinHandle<Applied>> {
        self.0.pop_front()
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        for chunk in &self.0 {
            chunk.abort();
        }
    }
}

enum Applied {
    Job(ImportJob),
    Stopped,
    Failed(OpError),
}

/// Sends a chunk to the org's scope until it is applied: a restarting, overloaded or slow scope
/// is retried (a retried chunk that was applied meanwhile is answered with the stored job).
async fn apply(
    client: &ScopeClient,
    org_id: Id,
    chunk: ImportChunk,
    stop: &mut watch::Receiver<bool>,
) -> Applied {
    let chunk = Arc::new(chunk);
    let mut backoff = Duration::from_millis(20);
    loop {
        let result = client
            .call_within(org_id, CHUNK_TIMEOUT, |reply| ScopeMsg::ImportChunk {
                org_id,
                chunk: chunk.clone(),
                reply,
            })
            .await;
        match result {
            Ok(job) => return Applied::Job(job),
            Err(OpError::Unavailable(_) | OpError::Overloaded) => {}
            Err(OpError::Storage(err)) => {
                tracing::warn!(job_id = chunk.job_id, error = %err, "import chunk not applied, retrying");
            }
            Err(err) => return Applied::Failed(err),
        }
        if *stop.borrow() {
            return Applied::Stopped;
        }
        // A scope marked failed is not restarted: waiting for it would keep the job running
        // forever.
        let scope_failed = client.scope_failed(org_id);
        if scope_failed {
            return Applied::Failed(OpError::Unavailable(
                "the scope failed and is not restarted".into(),
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return Applied::Stopped,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Marks a job failed (its spool is kept for inspection until the next start).
async fn fail(client: &ScopeClient, mut job: ImportJob, reason: String) {
    tracing::error!(job_id = job.id, reason, "import failed");
    // Through the scope, which holds the job ahead of the store while its chunks are written:
    // a job failed beside it would still be running there.
    let (org_id, job_id) = (job.org_id, job.id);
    let failed = client
        .call_within(org_id, CHUNK_TIMEOUT, |reply| ScopeMsg::FailImport {
            org_id,
            job_id,
            reason: reason.clone(),
            reply,
        })
        .await;
    let Err(err) = failed else {
        return;
    };
    // A scope that is not running holds no job: its next incarnation reads the store. Its last
    // lane may still be writing a batch with an older record of the job: written after it,
    // unless a new incarnation holds the lane by then (it does while it runs), which is not
    // waited for. At worst the job is running again in the store, without a driver, and
    // resumes at the next start.
    tracing::warn!(job_id, error = %err, "the scope did not record the import failure, writing it directly");
    let lane = client.lane_lock(org_id);
    let _after_the_lane = match &lane {
        Some(lock) => tokio::time::timeout(LANE_WAIT, lock.lock()).await.ok(),
        None => None,
    };
    let store = client.store();
    // The stored record is the truth: the chunks applied since `job` was read are in it.
    if let Ok(stored) = store.get_import_job(job.id) {
        job = stored;
    }
    job.status = ImportStatus::Failed;
    job.failure = Some(reason);
    job.updated_at = now_millis();
    let mut batch = WriteBatch::new();
    batch.put_import_job(&job);
    let written = match store.apply(batch) {
        Ok(()) => store.flush_async().await,
        Err(e) => Err(e),
    };
    if let Err(err) = written {
        tracing::error!(job_id = job.id, error = %err, "could not record the import failure");
    }
}

/// Returns the non-empty lines of `bytes` fed in small pieces, as a body arrives.
#[cfg(test)]
fn count_lines(bytes: &[u8]) -> u64 {
    let mut counter = LineCounter::default();
    for piece in bytes.chunks(7) {
        counter.feed(piece);
    }
    counter.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_empty_lines_count() {
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(b"\n\n  \n"), 0);
        assert_eq!(count_lines(b"{}\n\n{}"), 2);
        assert_eq!(count_lines(b"{\"a\": 1}\r\n   {}\n \t\n"), 2);
    }
}
