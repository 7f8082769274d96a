//! The scope actor: one per unify scope. It holds the scope's members ([`Roster`]), keys,
//! key-node index and partition (the engine's [`Unifier`]) in memory and persists every change
//! before replying.
//!
//! Durable form: per org, a snapshot plus a journal of batches (see `unify_storage::journal`);
//! profile ids and every lookup are derived, rebuilt in memory at load. Group commit: each
//! handled operation updates memory and stages its member writes, events and other records,
//! and schedules a `Flush` message behind whatever is already queued. `Flush` writes one
//! journal record per org touched, one event block and the scope record in one atomic batch,
//! flushes once, publishes the new member view and only then sends the replies of every
//! operation in it. A failed write or a panic drops the pending replies (callers see
//! `Unavailable`) and the actor is restarted from the store, so nothing is ever acknowledged
//! before it is durable. Reads are answered at once when nothing is pending, else after the
//! pending batch is durable, so no reader sees a write that could still be lost. When an org's
//! journal has grown past a bound, a snapshot of the last published view is written by a
//! blocking task beside the actor.
//!
//! It answers the messages of `protocol` ([`ScopeMsg`]); it may call the engine, the store
//! and the leaf modules, never a service, the scope client or another actor.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use unify_storage::{
    EventBlockSpan, Id, IdKind, JobKind, Member, MemberLog, MemberWrite, Org, PendingJob,
    ScopeRecord, SnapshotManifest, Store, StoredMember, WriteBatch,
};

use crate::clock::{now_millis, rfc3339};
use crate::engine::{
    Attribute, Column, Columns, Delta, Explanation, KeySet, Move, Unifier, UnifyKey, ViewSource,
    merged_view,
};
use crate::error::OpError;
use crate::events::{Event, EventBody, Reason, profile_events};
use crate::hub::Hub;
use crate::links::{key_records, member_links, outline_links, stored_links};
use crate::ops::{self, MemberOp, NewMember};
use crate::protocol::{ProfileView, Reply, ScopeMsg};
use crate::roster::{MemberView, Roster};
use crate::settings::Settings;
use crate::status::ScopeStatus;
use lane::{Commit, Lane};

/// A reply whose value is ready but which is sent only once the batch is durable; it is given
/// the outcome of the commit.
type Deferred = Box<dyn FnOnce(Result<(), String>) + Send>;

mod graph;
mod import_chunk;
mod lane;
mod load;
mod provision;

/// Start-up arguments of a scope actor.
#[derive(Debug, Clone)]
pub struct ScopeArgs {
    pub scope_id: Id,
    pub store: Store,
    pub settings: Arc<Settings>,
    pub status: Arc<ScopeStatus>,
    pub hub: Hub,
}

/// The scope actor (configuration only; see [`ScopeState`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope;

/// What one batch has staged and not yet committed.
#[derive(Default)]
struct Pending {
    /// Records other than members and events (import jobs, link codes, outbox entries).
    batch: WriteBatch,
    replies: Vec<Deferred>,
    /// The batch's events (stored in its event block, with an outbox entry each when the scope
    /// is CDH-connected, by the commit lane).
    events: Vec<Event>,
    /// Member writes in order, with the org whose journal records them.
    writes: Vec<(Id, MemberWrite)>,
    /// The running job (its generation) finishes when this batch is durable.
    finishes_job: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.batch.is_empty()
            && self.replies.is_empty()
            && self.writes.is_empty()
            && self.events.is_empty()
    }
}

/// Where one org's journal stands.
#[derive(Debug, Clone, Copy, Default)]
struct OrgJournal {
    /// Seq of its last durable journal record.
    seq: u64,
    /// Seq of its last journal record handed to the commit lane.
    assigned: u64,
    /// Bytes journaled since the last snapshot.
    since_snapshot: u64,
    /// Size of the last snapshot.
    snapshot_bytes: u64,
    /// `Some(bytes journaled when it started)` while a snapshot is being written.
    snapshotting: Option<u64>,
}

/// Writes org `org_id`'s members of `view` as its snapshot up to journal seq `upto`, on the
/// calling thread, at background priority: it yields the cores to the scope's own threads and
/// to the server's (a snapshot due right after a restart would otherwise slow the reads and
/// jobs of the first second). Returns `None` when it gave up because the scope stops.
fn write_snapshot(
    store: &Store,
    view: &MemberView,
    status: &ScopeStatus,
    scope_id: Id,
    org_id: Id,
    upto: u64,
) -> Option<Result<SnapshotManifest, String>> {
    let _ = rustix::process::nice(19);
    let started = std::time::Instant::now();
    let mut members = view
        .entries()
        .filter(|(_, e)| e.org_id() == org_id)
        .map(|(_, e)| e.stored.clone());
    match store.write_snapshot_unless(org_id, upto, &mut members, &status.stopping) {
        Ok(Some(m)) => {
            tracing::info!(
                scope_id,
                org_id,
                upto,
                members = m.members,
                bytes = m.bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "snapshot written"
            );
            Some(Ok(m))
        }
        Ok(None) => {
            tracing::info!(scope_id, org_id, upto, "snapshot given up: the scope stops");
            None
        }
        Err(error) => {
            tracing::error!(scope_id, org_id, %error, "snapshot failed");
            Some(Err(error.to_string()))
        }
    }
}

/// A scope-wide recomputation whose profile changes are published chunk by chunk.
#[derive(Debug)]
struct Job {
    kind: JobKind,
    remaining: VecDeque<Move>,
    done: u64,
    total: u64,
}

impl Job {
    /// A job publishing the moved members (erasures need nothing), grouped by new profile so
    /// that a profile's members tend to land in one chunk.
    fn new(kind: JobKind, mut moves: Vec<Move>) -> Job {
        moves.retain(|m| m.to.is_some());
        moves.sort_by_key(|m| (m.to, m.member));
        Job {
            kind,
            total: moves.len() as u64,
            remaining: moves.into(),
            done: 0,
        }
    }

    /// Returns this job with the moves `running` has not published yet added to its own.
    fn absorb(self, running: Job) -> Job {
        let mut moves: Vec<Move> = self
            .remaining
            .into_iter()
            .chain(running.remaining)
            .collect();
        moves.sort_by_key(|m| m.member);
        moves.dedup_by_key(|m| m.member);
        Job::new(self.kind, moves)
    }
}

/// The state of a scope actor.
pub struct ScopeState {
    id: Id,
    store: Store,
    settings: Arc<Settings>,
    status: Arc<ScopeStatus>,
    record: ScopeRecord,
    orgs: HashMap<Id, Org>,
    roster: Roster,
    unifier: Unifier,
    journals: HashMap<Id, OrgJournal>,
    /// The retained event blocks, oldest first.
    event_blocks: VecDeque<EventBlockSpan>,
    pending: Pending,
    flush_scheduled: bool,
    job: Option<Job>,
    /// The generation of the last job begun ([`crate::status::JobFlag`]).
    job_generation: u64,
    /// While an import is streaming chunks in (until its last chunk, or a pause of
    /// [`IMPORT_PAUSE`] after its latest one), snapshots wait: see `snapshot_if_due`.
    importing_until: Option<std::time::Instant>,
    /// Where committed batches are written, flushed and answered.
    lane: Lane,
    /// Link codes provisioning claimed in batches the lane may not have written yet.
    staged: provision::Staged,
    /// The members as of the last batch the lane made durable (what a snapshot writes).
    durable_view: Option<Arc<MemberView>>,
    /// Import jobs as this actor last staged them: the store shows a chunk's job record only
    /// once the lane has written it, and the next chunk may arrive before.
    import_jobs: HashMap<Id, unify_storage::ImportJob>,
}

/// How long after an import chunk the import counts as still streaming.
const IMPORT_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

impl std::fmt::Debug for ScopeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeState")
            .field("id", &self.id)
            .field("members", &self.unifier.len())
            .field("job", &self.job)
            .finish()
    }
}

impl Actor for Scope {
    type Msg = ScopeMsg;
    type State = ScopeState;
    type Arguments = ScopeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ScopeMsg>,
        args: ScopeArgs,
    ) -> Result<ScopeState, ActorProcessingErr> {
        args.status.running.store(false, Ordering::Release);
        // An earlier incarnation's commit lane may still be writing what it was handed.
        let lane_lock = args.status.lane_lock.clone().lock_owned().await;
        let store = args.store.clone();
        let settings = args.settings.clone();
        let id = args.scope_id;
        // Loading reads, decodes and partitions every member: blocking work, kept off the
        // runtime.
        let loaded =
            tokio::task::spawn_blocking(move || load::load(&store, &settings, id)).await??;
        let job = loaded.record.pending_job.as_ref().map(|pending| {
            // The moves of the interrupted job are not known any more: every member is
            // published again under the partition rebuilt from the stored members.
            let moves = loaded
                .roster
                .entries()
                .map(|(&member, e)| Move {
                    member,
                    from: Some(e.profile_id),
                    to: Some(e.profile_id),
                })
                .collect();
            Job::new(pending.kind.clone(), moves)
        });
        if job.is_none() {
            args.status.job_active.clear();
        }
        args.status.stopping.store(false, Ordering::Release);
        args.status
            .members
            .store(loaded.unifier.len() as u64, Ordering::Release);
        args.status.view.store(Some(Arc::new(loaded.roster.view())));
        // What the load read is durable once flushed: a previous incarnation may have written
        // a batch that its failure kept from being flushed.
        args.store.flush_async().await?;
        args.status.durable_seq.set(loaded.record.last_seq);
        let durable_view = args.status.view.load_full();
        let lane = Lane::start(
            id,
            args.store.clone(),
            args.status.clone(),
            args.hub.clone(),
            myself,
            lane_lock,
        );
        Ok(ScopeState {
            id,
            store: args.store,
            settings: args.settings,
            status: args.status,
            record: loaded.record,
            orgs: loaded.orgs,
            roster: loaded.roster,
            unifier: loaded.unifier,
            journals: loaded.journals,
            event_blocks: loaded.event_blocks,
            pending: Pending::default(),
            flush_scheduled: false,
            job,
            job_generation: 0,
            importing_until: None,
            lane,
            staged: provision::Staged::default(),
            durable_view,
            import_jobs: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<ScopeMsg>,
        state: &mut ScopeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(job) = state.job.take() {
            tracing::info!(
                scope_id = state.id,
                members = job.total,
                "resuming re-unification job"
            );
            state.begin_job(&myself, job)?;
        }
        state.status.running.store(true, Ordering::Release);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ScopeMsg>,
        state: &mut ScopeState,
    ) -> Result<(), ActorProcessingErr> {
        state.status.running.store(false, Ordering::Release);
        // A snapshot being written gives up at its next chunk, so that the stop does not wait
        // for a whole one, and the store is not written once the actor is gone.
        state.status.stopping.store(true, Ordering::Release);
        // A graceful stop commits what was handled; its callers are waiting for the answer.
        let committed = state.commit().await;
        state.lane.close().await;
        let _ = state.status.snapshot_lock.clone().lock_owned().await;
        committed
    }

    async fn handle(
        &self,
        myself: ActorRef<ScopeMsg>,
        message: ScopeMsg,
        state: &mut ScopeState,
    ) -> Result<(), ActorProcessingErr> {
        if state.lane.has_failed() {
            // What memory holds may include a batch that was never written: nothing more is
            // answered from it; the actor fails and is restarted from the store.
            return Err("the scope could not persist a batch".into());
        }
        match message {
            ScopeMsg::Flush => state.commit().await?,
            ScopeMsg::JobChunk => state.job_chunk(&myself)?,
            ScopeMsg::SnapshotDone { org_id, result } => state.snapshot_done(org_id, result),
            ScopeMsg::Committed {
                journaled,
                block,
                view,
            } => state.committed(journaled, block, view),
            ScopeMsg::CommitFailed { error } => return Err(error.into()),
            ScopeMsg::FindIdentity {
                org_id,
                channel_id,
                external_member_id,
                reply,
            } => {
                let result = match state
                    .roster
                    .identity(org_id, channel_id, &external_member_id)
                {
                    Some(id) => state.member(id).map(Some),
                    None => Ok(None),
                };
                state.respond(reply, result);
            }
            ScopeMsg::Panic => panic!("scope actor panic requested"),
            ScopeMsg::Provision {
                sender,
                profile,
                reply,
            } => {
                let result = state.provision(sender, profile)?;
                state.respond(reply, result);
            }
            ScopeMsg::RedeemLinkCode {
                sender,
                code,
                reply,
            } => {
                let result = state.redeem_link_code(sender, code)?;
                state.respond(reply, result);
            }
            ScopeMsg::Create {
                org_id,
                member,
                reason,
                reply,
            } => {
                let result = state.create(org_id, member, reason)?;
                state.respond(reply, result);
            }
            ScopeMsg::CreateMany {
                org_id,
                members,
                reply,
            } => {
                let mut results = Vec::with_capacity(members.len());
                for member in members {
                    let result = state.create(org_id, member, Reason::Import)?;
                    results.push(result.map(|(m, _)| m));
                }
                state.respond(reply, Ok(results));
            }
            ScopeMsg::ImportChunk {
                org_id,
                chunk,
                reply,
            } => state.import_chunk(org_id, &chunk, reply).await?,
            ScopeMsg::FailImport {
                org_id,
                job_id,
                reason,
                reply,
            } => state.fail_import(org_id, job_id, reason, reply).await?,
            ScopeMsg::Mutate {
                org_id,
                member_id,
                op,
                reply,
            } => {
                let result = state.mutate(org_id, member_id, op)?;
                state.respond(reply, result);
            }
            ScopeMsg::GetMember {
                org_id,
                member_id,
                reply,
            } => {
                let result = state.visible_member(org_id, member_id);
                state.respond(reply, result);
            }
            ScopeMsg::Unification {
                org_id,
                member_id,
                reply,
            } => {
                let result = state.unification(org_id, member_id);
                state.respond(reply, result);
            }
            ScopeMsg::Profile {
                org_id,
                member_id,
                reply,
            } => {
                let result = state.profile(org_id, member_id);
                state.respond(reply, result);
            }
            ScopeMsg::Explain {
                org_id,
                member_id,
                other,
                reply,
            } => {
                let result = state.explain(org_id, member_id, other);
                state.respond(reply, result);
            }
            ScopeMsg::KeyHolders {
                org_id,
                attribute,
                value,
                after,
                limit,
                reply,
            } => {
                let result = state.key_holders(org_id, attribute, &value, after, limit);
                state.respond(reply, result);
            }
            ScopeMsg::Graph {
                org_id,
                member_id,
                max_members,
                reply,
            } => {
                let result = state.graph(org_id, member_id, max_members);
                state.respond(reply, result);
            }
            ScopeMsg::DryRun { keys, reply } => {
                let report = state
                    .intern_external_for(&keys)
                    .map(|()| state.unifier.dry_run(&keys));
                state.respond(reply, report);
            }
            ScopeMsg::HotValues { reply } => {
                let hot = state.unifier.hot_values();
                state.respond(reply, Ok(hot));
            }
            ScopeMsg::Setting { reply } => {
                let record = state.record.clone();
                state.respond(reply, Ok(record));
            }
            ScopeMsg::SetKeys { change, reply } => {
                let result = match change.resolve(&state.record, state.unifier.keys()) {
                    Ok(keys) => state.set_keys(&myself, keys)?,
                    Err(e) => Err(e),
                };
                state.respond(reply, result);
            }
        }
        if !state.pending.is_empty() {
            if state.pending.replies.len() >= state.settings.batch_max {
                state.commit().await?;
            } else {
                state.schedule_flush(&myself)?;
            }
        }
        // Cheap when nothing is due; the view and journal seqs it reads change only by a commit.
        state.snapshot_if_due(&myself);
        Ok(())
    }
}

impl ScopeState {
    /// Sends a reply now when nothing is pending (or it is an error), else once the pending
    /// batch is durable.
    fn respond<T: Send + 'static>(&mut self, reply: Reply<T>, result: Result<T, OpError>) {
        if (self.pending.is_empty() && self.lane.is_idle()) || result.is_err() {
            let _ = reply.send(result);
            return;
        }
        self.pending.replies.push(Box::new(move |outcome| {
            let _ = reply.send(match outcome {
                Ok(()) => result,
                Err(message) => Err(OpError::Unavailable(message)),
            });
        }));
    }

    fn schedule_flush(&mut self, myself: &ActorRef<ScopeMsg>) -> Result<(), ActorProcessingErr> {
        if !self.flush_scheduled {
            myself.send_message(ScopeMsg::Flush)?;
            self.flush_scheduled = true;
        }
        Ok(())
    }

    /// Hands the pending batch to the commit lane, which writes it atomically, flushes, then
    /// publishes and replies (see `lane.rs`); waits only while the lane is full.
    async fn commit(&mut self) -> Result<(), ActorProcessingErr> {
        self.flush_scheduled = false;
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Replies alone (reads made while batches were in the lane) write nothing: the lane
        // answers them once the batches before them are durable.
        let writes_anything =
            !(pending.batch.is_empty() && pending.writes.is_empty() && pending.events.is_empty());
        let mut by_org: BTreeMap<Id, Vec<MemberWrite>> = BTreeMap::new();
        for (org_id, write) in pending.writes.drain(..) {
            by_org.entry(org_id).or_default().push(write);
        }
        // Seqs are given here, in order; the lane encodes the records.
        let journal: Vec<(Id, u64, Vec<MemberWrite>)> = by_org
            .into_iter()
            .map(|(org_id, writes)| {
                let journal = self.journals.entry(org_id).or_default();
                journal.assigned = journal.assigned.max(journal.seq) + 1;
                (org_id, journal.assigned, writes)
            })
            .collect();
        let block = match (pending.events.first(), pending.events.last()) {
            (Some(first), Some(last)) => Some(EventBlockSpan {
                first: first.seq,
                last: last.seq,
            }),
            _ => None,
        };
        self.trim_events(&mut pending.batch, block);
        if writes_anything {
            pending.batch.put_scope(&self.record);
        }
        let commit = Commit {
            batch: pending.batch,
            journal,
            view: Arc::new(self.roster.view()),
            last_seq: self.record.last_seq,
            events: pending.events,
            outbox: self.settings.cdh_enabled && self.record.org_ids.len() > 1,
            replies: pending.replies,
            members: self.unifier.len() as u64,
            finishes_job: pending.finishes_job,
            block,
            #[cfg(test)]
            panic: false,
        };
        self.lane.submit(commit).await
    }

    /// Records a batch the lane made durable: its journal records and event block count, and
    /// its view is what the next snapshot writes.
    fn committed(
        &mut self,
        journaled: Vec<(Id, u64, u64)>,
        block: Option<EventBlockSpan>,
        view: Arc<MemberView>,
    ) {
        for (org_id, seq, bytes) in journaled {
            let journal = self.journals.entry(org_id).or_default();
            journal.seq = seq;
            journal.since_snapshot += bytes;
        }
        if let Some(block) = block {
            self.event_blocks.push_back(block);
        }
        self.durable_view = Some(view);
        if self.lane.is_idle() && self.pending.is_empty() {
            // Everything staged is in the store now: reads of it need no overlay.
            self.staged = provision::Staged::default();
        }
    }

    /// Deletes the event blocks that fall wholly out of retention once `adding` is written,
    /// in the same batch.
    fn trim_events(&mut self, batch: &mut WriteBatch, adding: Option<EventBlockSpan>) {
        let retain = self.settings.events_retain.max(1);
        let Some(last) = adding.map(|b| b.last) else {
            return;
        };
        if last < retain {
            return;
        }
        let keep_from = last - retain + 1;
        while let Some(&oldest) = self.event_blocks.front()
            && oldest.last < keep_from
        {
            batch.delete_event_block(self.id, oldest);
            self.event_blocks.pop_front();
        }
    }

    /// Starts writing a snapshot of every org whose journal has grown past the bound, from the
    /// last published view (exactly what the journal holds up to its last durable record).
    ///
    /// Not while the scope stops, nor while a scope-wide job runs: the job writes no member,
    /// so the journal does not grow, and a snapshot's writes would slow each of the job's
    /// flushes (the store has one log). Nor while an import streams in: such a snapshot is
    /// outgrown within seconds and written again, writing every member once more and holding
    /// an old view of the whole roster meanwhile, while replaying an import's journal records
    /// at a restart costs what reading the same members from a snapshot does. The snapshot
    /// follows the import's last chunk.
    fn snapshot_if_due(&mut self, myself: &ActorRef<ScopeMsg>) {
        if self.status.stopping.load(Ordering::Acquire) || self.job.is_some() {
            return;
        }
        if let Some(until) = self.importing_until {
            if std::time::Instant::now() < until {
                return;
            }
            self.importing_until = None;
        }
        let min = self.settings.snapshot_min_bytes;
        for (&org_id, journal) in &mut self.journals {
            let bound = min.max(journal.snapshot_bytes);
            if journal.snapshotting.is_some() || journal.since_snapshot < bound {
                continue;
            }
            let Some(view) = self.durable_view.clone() else {
                return;
            };
            // One snapshot at a time per scope; the runtime's shutdown waits for it.
            let Ok(writing) = self.status.snapshot_lock.clone().try_lock_owned() else {
                return;
            };
            journal.snapshotting = Some(journal.since_snapshot);
            let (store, view, myself, upto) =
                (self.store.clone(), view, myself.clone(), journal.seq);
            let scope_id = self.id;
            let status = self.status.clone();
            tracing::info!(scope_id, org_id, upto, "snapshot started");
            let spawned = std::thread::Builder::new()
                .name(format!("scope-{scope_id}-snapshot"))
                .spawn(move || {
                    let _writing = writing;
                    let result = write_snapshot(&store, &view, &status, scope_id, org_id, upto);
                    if let Some(result) = result {
                        // The actor may be gone (stopped or restarted): the snapshot stands
                        // anyway.
                        let _ = myself.send_message(ScopeMsg::SnapshotDone { org_id, result });
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(scope_id, org_id, %error, "snapshot thread did not start");
                journal.snapshotting = None;
            }
        }
    }

    /// Records a finished snapshot: the journal bytes it covers no longer count.
    fn snapshot_done(&mut self, org_id: Id, result: Result<SnapshotManifest, String>) {
        let Some(journal) = self.journals.get_mut(&org_id) else {
            return;
        };
        let Some(covered) = journal.snapshotting.take() else {
            return;
        };
        if let Ok(manifest) = result {
            journal.since_snapshot = journal.since_snapshot.saturating_sub(covered);
            journal.snapshot_bytes = manifest.bytes;
        }
    }

    /// Stages an event (the commit lane stores it, and its outbox entry when the scope is
    /// CDH-connected).
    fn emit(&mut self, body: EventBody) {
        let seq = self.record.last_seq + 1;
        self.record.last_seq = seq;
        self.pending.events.push(Event {
            seq,
            unify_scope_id: self.id,
            body,
        });
    }

    /// Stages a member (created or changed) with the linking values the unifier holds for it
    /// (every caller has upserted the member first, so they are the record's own), and puts it
    /// in the roster with its profile id.
    fn stage_member(&mut self, member: Member) {
        let mut links = self.unifier.link_values(member.id).unwrap_or_default();
        // The unifier may not hold external member ids (not a key): the record's own, as
        // `LinkValues::normalize` makes it.
        let external = Attribute::ExternalMemberId;
        links.0[external.index()] = (!member.manual_unification)
            .then(|| {
                self.settings
                    .normalizer
                    .normalize(external, &member.external_member_id)
            })
            .flatten();
        let stored = StoredMember::new(&member, &stored_links(&self.settings.normalizer, &links));
        self.roster.put(
            stored.clone(),
            member.username.as_deref(),
            member.profile_id,
        );
        self.pending
            .writes
            .push((member.org_id, MemberWrite::Put(stored)));
    }

    /// Reads a member of this scope (its state in memory, pending writes included).
    fn member(&self, id: Id) -> Result<Member, OpError> {
        let entry = self.roster.get(id).ok_or(OpError::NotFound("member"))?;
        if !self.orgs.contains_key(&entry.org_id()) {
            return Err(OpError::NotFound("member"));
        }
        Ok(entry.member()?)
    }

    /// Reads a member that belongs to `org_id`; any other member is not found.
    fn visible_member(&self, org_id: Id, id: Id) -> Result<Member, OpError> {
        let member = self.member(id)?;
        if member.org_id != org_id {
            return Err(OpError::NotFound("member"));
        }
        Ok(member)
    }

    fn identity(&self, org_id: Id, channel_id: Option<Id>, ext: &str) -> Option<Id> {
        self.roster.identity(org_id, channel_id, ext)
    }

    /// Checks a new member against the contract of SPEC 4.4.
    fn validate_new(&self, org_id: Id, new: &NewMember) -> Result<&Org, OpError> {
        let org = self
            .orgs
            .get(&org_id)
            .ok_or(OpError::NotFound("organization"))?;
        if new.external_member_id.trim().is_empty() {
            return Err(OpError::invalid("external_member_id must not be empty"));
        }
        match (org.source, new.channel_id) {
            (unify_storage::Source::Caac, None) => Err(OpError::invalid(
                "a member of a caac organization needs a channel_id",
            )),
            (unify_storage::Source::Caac, Some(channel_id)) => {
                match self.store.get_channel(channel_id) {
                    Ok(channel) if channel.org_id == org_id => Ok(org),
                    Err(e) if !e.is_not_found() => Err(e.into()),
                    _ => Err(OpError::invalid(format!(
                        "channel {channel_id} is not a channel of this organization"
                    ))),
                }
            }
            (unify_storage::Source::Maac, Some(_)) => Err(OpError::invalid(
                "a member of a maac organization has no channel_id",
            )),
            (unify_storage::Source::Maac, None) => Ok(org),
        }
    }

    /// Creates a member or finds the existing one. The outer error is fatal for the actor.
    fn create(
        &mut self,
        org_id: Id,
        new: NewMember,
        reason: Reason,
    ) -> Result<Result<(Member, bool), OpError>, ActorProcessingErr> {
        let source = match self.validate_new(org_id, &new) {
            Ok(org) => org.source,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(existing) = self.identity(org_id, new.channel_id, &new.external_member_id) {
            return Ok(self.member(existing).map(|m| (m, false)));
        }
        let id = match self.store.allocate_ids(IdKind::Member, 1) {
            Ok(range) => range.start,
            Err(e) => return Ok(Err(e.into())),
        };
        let now = now_millis();
        let mut member = ops::new_member(id, org_id, source, new, now);
        let delta = self
            .unifier
            .upsert(id, &member_links(&self.settings.normalizer, &member));
        member.profile_id = self.unifier.profile_of(id).unwrap_or(id);
        self.stage_member(member.clone());
        self.apply_moves(&delta);
        self.emit_changes(&delta, reason, Some(&member), now);
        Ok(Ok((member, true)))
    }

    /// Applies an operation to an existing member. The outer error is fatal for the actor.
    fn mutate(
        &mut self,
        org_id: Id,
        member_id: Id,
        op: MemberOp,
    ) -> Result<Result<Option<Member>, OpError>, ActorProcessingErr> {
        let mut member = match self.visible_member(org_id, member_id) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        let now = now_millis();
        if op == MemberOp::Delete {
            let delta = self.unifier.remove(member_id);
            self.roster.remove(member_id);
            self.pending
                .writes
                .push((member.org_id, MemberWrite::Delete(member_id)));
            self.apply_moves(&delta);
            self.emit_changes(&delta, Reason::MemberDeleted, None, now);
            return Ok(Ok(None));
        }
        match ops::apply(&mut member, &op, self.unifier.keys(), now) {
            Err(e) => return Ok(Err(e)),
            // Nothing changed: nothing to write, no event.
            Ok(false) => return Ok(Ok(Some(member))),
            Ok(true) => {}
        }
        let delta = self
            .unifier
            .upsert(member_id, &member_links(&self.settings.normalizer, &member));
        member.profile_id = self.unifier.profile_of(member_id).unwrap_or(member_id);
        self.stage_member(member.clone());
        self.apply_moves(&delta);
        self.emit_changes(&delta, op.reason(), Some(&member), now);
        Ok(Ok(Some(member)))
    }

    /// Gives every member the delta moved its new profile id in the roster (nothing is
    /// written: profile ids are derived).
    fn apply_moves(&mut self, delta: &Delta) {
        for m in &delta.moves {
            if let Some(to) = m.to {
                self.roster.set_profile(m.member, to);
            }
        }
    }

    fn emit_changes(&mut self, delta: &Delta, reason: Reason, member: Option<&Member>, now: i64) {
        if let Some(m) = member {
            self.emit(EventBody::MemberUpdated {
                member_id: m.id,
                profile_id: Some(m.profile_id),
            });
        }
        for body in profile_events(delta, &self.unifier, reason, &rfc3339(now)) {
            self.emit(body);
        }
    }

    fn unification(&self, org_id: Id, member_id: Id) -> Result<Vec<Member>, OpError> {
        self.visible_member(org_id, member_id)?;
        self.unifier
            .profile_members(member_id)
            .into_iter()
            .filter(|&id| id != member_id)
            .map(|id| self.member(id))
            .collect()
    }

    fn profile(&self, org_id: Id, member_id: Id) -> Result<ProfileView, OpError> {
        self.visible_member(org_id, member_id)?;
        let member_ids = self.unifier.profile_members(member_id);
        let members: Vec<Member> = member_ids
            .iter()
            .map(|&id| self.member(id))
            .collect::<Result<_, _>>()?;
        let view = merged_view(members.iter().map(|m| ViewSource {
            member_id: m.id,
            updated_at: m.updated_at,
            fields: Column::ALL.map(|c| m.column(c).as_deref()),
        }));
        Ok(ProfileView {
            profile_id: self.unifier.profile_of(member_id).unwrap_or(member_id),
            unify_scope_id: self.id,
            member_ids,
            view,
        })
    }

    fn explain(&self, org_id: Id, member_id: Id, other: Id) -> Result<Explanation, OpError> {
        self.visible_member(org_id, member_id)?;
        let other_member = self.member(other)?;
        // A member of the scope's other org (after integrate) is explained only when it shares
        // the profile, which `unification` shows anyway; otherwise it is not visible here.
        let same_profile = self.unifier.profile_of(member_id) == self.unifier.profile_of(other);
        if other_member.org_id != org_id && !same_profile {
            return Err(OpError::NotFound("member"));
        }
        self.unifier
            .explain(member_id, other)
            .ok_or(OpError::NotFound("member"))
    }

    /// Gives the unifier the members' external member ids when `keys` link by them and it does
    /// not hold them yet (see `Unifier::intern_external`); they come from the roster's stored
    /// linking values.
    fn intern_external_for(&mut self, keys: &KeySet) -> Result<(), OpError> {
        if !self.unifier.needs_external(keys) {
            return Ok(());
        }
        let normalizer = &self.settings.normalizer;
        let external = Attribute::ExternalMemberId.index();
        let ids = self
            .roster
            .entries()
            .map(|(&id, entry)| {
                let outline = entry.stored.outline()?;
                let links = outline_links(normalizer, &outline, &entry.stored)?;
                Ok((id, links[external].as_deref().map(str::to_owned)))
            })
            .collect::<Result<Vec<_>, unify_storage::StoreError>>()?;
        self.unifier.intern_external(ids);
        Ok(())
    }

    /// Replaces the keys; when they differ, recomputes the partition and starts the job that
    /// publishes the moved members.
    fn set_keys(
        &mut self,
        myself: &ActorRef<ScopeMsg>,
        keys: Vec<UnifyKey>,
    ) -> Result<Result<ScopeRecord, OpError>, ActorProcessingErr> {
        let keyset = match KeySet::new(keys.clone()) {
            Ok(k) => k,
            Err(e) => return Ok(Err(OpError::invalid(e.to_string()))),
        };
        if &keyset == self.unifier.keys() {
            return Ok(Ok(self.record.clone()));
        }
        if let Err(e) = self.intern_external_for(&keyset) {
            return Ok(Err(e));
        }
        self.record.keys = match key_records(&self.store, &self.record.keys, &keys) {
            Ok(records) => records,
            Err(e) => return Ok(Err(e.into())),
        };
        let now = now_millis();
        self.record.updated_at = now;
        self.record.pending_job = Some(PendingJob {
            kind: JobKind::KeysChanged,
            scheduled_at: now,
        });
        let delta = self.unifier.set_keys(keyset);
        self.begin_job(myself, Job::new(JobKind::KeysChanged, delta.moves))?;
        Ok(Ok(self.record.clone()))
    }

    /// Starts publishing the job's moves: progress from zero, then chunks behind the queue.
    fn begin_job(
        &mut self,
        myself: &ActorRef<ScopeMsg>,
        job: Job,
    ) -> Result<(), ActorProcessingErr> {
        // Moves of a job still running are published by this one.
        let job = match self.job.take() {
            Some(running) => job.absorb(running),
            None => job,
        };
        self.job_generation = self.status.job_active.begin();
        self.status.job_done.store(0, Ordering::Release);
        self.status.job_total.store(job.total, Ordering::Release);
        self.emit(EventBody::MergeProgress {
            done: 0,
            total: job.total,
            is_finished: false,
        });
        self.job = Some(job);
        self.schedule_flush(myself)?;
        myself.send_message(ScopeMsg::JobChunk)?;
        Ok(())
    }

    /// Publishes the next chunk of moved members (their profile ids in the view and their
    /// events), with progress; the last chunk clears the scope's pending job in the same
    /// atomic write.
    fn job_chunk(&mut self, myself: &ActorRef<ScopeMsg>) -> Result<(), ActorProcessingErr> {
        let Some(job) = self.job.as_mut() else {
            return Ok(());
        };
        let n = self.settings.job_chunk.max(1).min(job.remaining.len());
        let chunk: Vec<Move> = job.remaining.drain(..n).collect();
        job.done += n as u64;
        let (done, total, finished) = (job.done, job.total, job.remaining.is_empty());
        let reason = match job.kind {
            JobKind::KeysChanged => Reason::UnifyKeysChanged,
            JobKind::Integrate => Reason::Integrate,
            JobKind::Disconnect => Reason::Disconnect,
            JobKind::Import => Reason::Import,
            JobKind::HotValue => Reason::MemberUpdated,
        };
        let mut moves = Vec::with_capacity(chunk.len());
        for m in chunk {
            // Members erased since the job started are gone; the others show their profile
            // now (members changed since were moved by their own operation already).
            let Some(now) = self.unifier.profile_of(m.member) else {
                continue;
            };
            self.roster.set_profile(m.member, now);
            moves.push(Move { to: Some(now), ..m });
        }
        let delta = Delta { moves, full: true };
        for body in profile_events(&delta, &self.unifier, reason, &rfc3339(now_millis())) {
            self.emit(body);
        }
        self.emit(EventBody::MergeProgress {
            done,
            total,
            is_finished: finished,
        });
        self.status.job_done.store(done, Ordering::Release);
        if finished {
            self.record.pending_job = None;
            self.job = None;
            self.pending.finishes_job = Some(self.job_generation);
        } else {
            myself.send_message(ScopeMsg::JobChunk)?;
        }
        self.schedule_flush(myself)
    }
}
