//! The scope actor: one per unify scope. It holds the scope's keys, key-node index and
//! partition in memory (the engine's [`Unifier`]) and persists every change before replying.
//!
//! Group commit: each handled operation updates memory and stages its records, events and
//! outbox entries in one pending [`WriteBatch`], and schedules a `Flush` message behind whatever
//! is already queued. `Flush` applies the batch atomically, flushes once, and only then sends
//! the replies of every operation in it. A failed write or a panic drops the pending replies
//! (callers see `Unavailable`) and the actor is restarted from the store, so nothing is ever
//! acknowledged before it is durable. Reads are answered at once when nothing is pending, else
//! after the pending batch is durable, so no reader sees a write that could still be lost.
//!
//! It answers the messages of `protocol` ([`ScopeMsg`]); it may call the engine, the store
//! and the leaf modules, never a service, the scope client or another actor.

use std::collections::{HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use unify_storage::{
    EventRecord, Id, IdKind, JobKind, Member, MemberLinks, Org, OutboxEntry, PendingJob,
    ScopeRecord, Store, StoreError, WriteBatch,
};

use crate::clock::{now_millis, rfc3339};
use crate::engine::{
    Column, Columns, Delta, Explanation, KeySet, LinkValues, Move, Normalizer, Unifier, UnifyKey,
    ViewSource, merged_view,
};
use crate::error::{OpError, found};
use crate::events::{Event, EventBody, Reason, profile_events};
use crate::hub::Hub;
use crate::links::{fresh_links, key_records, member_links, scope_keys, stored_links};
use crate::ops::{self, MemberOp, NewMember};
use crate::protocol::{ProfileView, Reply, ScopeMsg};
use crate::settings::Settings;
use crate::status::ScopeStatus;

/// A reply whose value is ready but which is sent only once the batch is durable; it is given
/// the outcome of the commit.
type Deferred = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A scope as loaded from the store, before its actor state is assembled.
struct Loaded {
    record: ScopeRecord,
    orgs: HashMap<Id, Org>,
    unifier: Unifier,
    /// Members whose stored profile differs from the rebuilt partition.
    mismatches: Vec<Move>,
}

mod import_chunk;
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
    batch: WriteBatch,
    replies: Vec<Deferred>,
    events: Vec<Event>,
    /// Members written in this batch (`None`: deleted), read before the store.
    members: HashMap<Id, Option<Member>>,
    /// Identities created or deleted in this batch.
    identities: HashMap<(Id, Option<Id>, String), Option<Id>>,
    /// The running job finishes when this batch is durable.
    finishes_job: bool,
    /// Usernames and link codes claimed by provisioning in this batch.
    provision: provision::Staged,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.replies.is_empty()
    }
}

/// A scope-wide recomputation whose member records are being rewritten chunk by chunk.
#[derive(Debug)]
struct Job {
    kind: JobKind,
    remaining: VecDeque<Move>,
    done: u64,
    total: u64,
}

impl Job {
    /// A job rewriting the moved members (erasures need no rewrite), grouped by new profile so
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
}

/// The state of a scope actor.
pub struct ScopeState {
    id: Id,
    store: Store,
    settings: Arc<Settings>,
    status: Arc<ScopeStatus>,
    hub: Hub,
    record: ScopeRecord,
    orgs: HashMap<Id, Org>,
    unifier: Unifier,
    /// Oldest retained event seq (0 when the log is empty).
    oldest_seq: u64,
    pending: Pending,
    flush_scheduled: bool,
    job: Option<Job>,
}

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
        _myself: ActorRef<ScopeMsg>,
        args: ScopeArgs,
    ) -> Result<ScopeState, ActorProcessingErr> {
        args.status.running.store(false, Ordering::Release);
        let store = args.store.clone();
        let settings = args.settings.clone();
        let id = args.scope_id;
        // Loading reads and normalizes every member: blocking work, kept off the runtime.
        let loaded = tokio::task::spawn_blocking(move || load(&store, &settings, id)).await??;
        let Loaded {
            record,
            orgs,
            unifier,
            mismatches,
        } = loaded;
        let oldest_seq = args.store.oldest_event_seq(id)?.unwrap_or(0);
        let kind = match &record.pending_job {
            Some(pending) => Some(pending.kind.clone()),
            None if !mismatches.is_empty() => {
                tracing::warn!(
                    scope_id = id,
                    members = mismatches.len(),
                    "stored partition differs from rebuild, repairing"
                );
                Some(JobKind::HotValue)
            }
            None => None,
        };
        let job = kind.map(|kind| Job::new(kind, mismatches));
        args.status
            .job_active
            .store(job.is_some(), Ordering::Release);
        args.status
            .members
            .store(unifier.len() as u64, Ordering::Release);
        Ok(ScopeState {
            id,
            store: args.store,
            settings: args.settings,
            status: args.status,
            hub: args.hub,
            record,
            orgs,
            unifier,
            oldest_seq,
            pending: Pending::default(),
            flush_scheduled: false,
            job,
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
        // A graceful stop commits what was handled; its callers are waiting for the answer.
        state.commit().await
    }

    async fn handle(
        &self,
        myself: ActorRef<ScopeMsg>,
        message: ScopeMsg,
        state: &mut ScopeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ScopeMsg::Flush => return state.commit().await,
            ScopeMsg::JobChunk => state.job_chunk(&myself)?,
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
            } => return state.import_chunk(org_id, &chunk, reply).await,
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
            ScopeMsg::DryRun { keys, reply } => {
                let report = state.unifier.dry_run(&keys);
                state.respond(reply, Ok(report));
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
        Ok(())
    }
}

/// Loads a scope from the store: its record, orgs and members, the rebuilt partition, and the
/// members whose stored profile differs from it.
///
/// Members are read from the org-members index, which holds each member's profile id and
/// normalized linking values; only members whose values are missing or were normalized under
/// another configuration are read in full and normalized again. The index is read in parts on
/// all cores.
fn load(store: &Store, settings: &Settings, id: Id) -> Result<Loaded, ActorProcessingErr> {
    let started = std::time::Instant::now();
    let record = store.get_scope(id)?;
    let keys = scope_keys(&record)?;
    let mut orgs = HashMap::new();
    let mut members = Vec::new();
    for &org_id in &record.org_ids {
        orgs.insert(org_id, store.get_org(org_id)?);
        members.extend(read_org(store, &settings.normalizer, org_id)?);
    }
    let read = started.elapsed();
    let stored: Vec<(Id, Id)> = members.iter().map(|m| (m.id, m.profile_id)).collect();
    let unifier = Unifier::from_members(
        keys,
        settings.limits,
        members.into_iter().map(|m| (m.id, m.links)),
    );
    let mismatches: Vec<Move> = stored
        .into_iter()
        .filter_map(|(member, stored)| {
            let now = unifier.profile_of(member)?;
            (now != stored).then_some(Move {
                member,
                from: Some(stored),
                to: Some(now),
            })
        })
        .collect();
    tracing::debug!(
        scope_id = id,
        members = unifier.len(),
        read_ms = read.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "scope loaded"
    );
    Ok(Loaded {
        record,
        orgs,
        unifier,
        mismatches,
    })
}

/// What a load keeps of one member.
struct LoadedMember {
    id: Id,
    profile_id: Id,
    links: LinkValues,
}

/// Reads the members of an org for a load, ascending id, splitting the org's id range into
/// one part per core.
fn read_org(
    store: &Store,
    normalizer: &Normalizer,
    org_id: Id,
) -> Result<Vec<LoadedMember>, StoreError> {
    let Some((first, last)) = store.org_member_bounds(org_id)? else {
        return Ok(Vec::new());
    };
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let step = (last - first) / parts + 1;
    let ranges: Vec<RangeInclusive<Id>> = (0..parts)
        .map(|i| first.saturating_add(i * step))
        .take_while(|&start| start <= last)
        .map(|start| start..=start.saturating_add(step - 1).min(last))
        .collect();
    std::thread::scope(|threads| {
        let parts: Vec<_> = ranges
            .into_iter()
            .map(|ids| threads.spawn(move || read_org_part(store, normalizer, org_id, ids)))
            .collect();
        let mut members = Vec::new();
        for part in parts {
            members.extend(part.join().expect("a load thread panicked")?);
        }
        Ok(members)
    })
}

/// Reads the members of an org with an id in `ids`: from the index entry when its linking
/// values are fresh, else from the member record, normalized again.
fn read_org_part(
    store: &Store,
    normalizer: &Normalizer,
    org_id: Id,
    ids: RangeInclusive<Id>,
) -> Result<Vec<LoadedMember>, StoreError> {
    store
        .org_member_entries(org_id, ids)
        .map(|entry| {
            let entry = entry?;
            if let (Some(profile_id), Some(stored)) = (entry.profile_id, entry.links)
                && let Some(links) = fresh_links(normalizer, stored)
            {
                return Ok(LoadedMember {
                    id: entry.member_id,
                    profile_id,
                    links,
                });
            }
            let member = store.get_member(entry.member_id).map_err(|err| {
                if err.is_not_found() {
                    StoreError::Corrupt(format!(
                        "org-members index names missing member {}",
                        entry.member_id
                    ))
                } else {
                    err
                }
            })?;
            Ok(LoadedMember {
                id: member.id,
                profile_id: member.profile_id,
                links: member_links(normalizer, &member),
            })
        })
        .collect()
}

impl ScopeState {
    /// Sends a reply now when nothing is pending (or it is an error), else once the pending
    /// batch is durable.
    fn respond<T: Send + 'static>(&mut self, reply: Reply<T>, result: Result<T, OpError>) {
        if self.pending.is_empty() || result.is_err() {
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

    /// Writes the pending batch atomically, flushes, then replies and publishes.
    async fn commit(&mut self) -> Result<(), ActorProcessingErr> {
        self.flush_scheduled = false;
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        self.trim_events(&mut pending.batch);
        pending.batch.put_scope(&self.record);
        // Odd from before the write until the flush returns (see `ScopeStatus::commit_epoch`);
        // after a failed commit it stays odd, so direct reads wait for the restarted actor.
        let writing = self.status.commit_epoch.load(Ordering::Acquire) | 1;
        self.status.commit_epoch.store(writing, Ordering::Release);
        let written = match self.store.apply(pending.batch) {
            Ok(()) => self.store.flush_async().await,
            Err(e) => Err(e),
        };
        if written.is_ok() {
            self.status
                .commit_epoch
                .store(writing + 1, Ordering::Release);
        }
        if let Err(err) = written {
            tracing::error!(scope_id = self.id, error = %err, "commit failed, restarting scope");
            for reply in pending.replies {
                reply(Err("the scope could not persist the operation".into()));
            }
            return Err(err.into());
        }
        // Published before anything is answered: a caller that gets its reply (or sees the
        // job finished) and then subscribes does not receive this batch's events live.
        let has_events = !pending.events.is_empty();
        self.hub.publish(self.id, pending.events);
        self.status
            .members
            .store(self.unifier.len() as u64, Ordering::Release);
        if pending.finishes_job {
            self.status.job_active.store(false, Ordering::Release);
        }
        for reply in pending.replies {
            reply(Ok(()));
        }
        if self.settings.cdh_enabled && self.record.org_ids.len() > 1 && has_events {
            // The batch made outbox entries durable: the bridge delivers them now.
            self.hub.notify_outbox();
        }
        Ok(())
    }

    /// Deletes events that fall out of retention, in the same batch.
    fn trim_events(&mut self, batch: &mut WriteBatch) {
        let retain = self.settings.events_retain.max(1);
        if self.record.last_seq < retain || self.oldest_seq == 0 {
            return;
        }
        let keep_from = self.record.last_seq - retain + 1;
        while self.oldest_seq < keep_from {
            batch.delete_event(self.id, self.oldest_seq);
            self.oldest_seq += 1;
        }
    }

    /// Stages an event (and its outbox entry when the scope is CDH-connected).
    fn emit(&mut self, body: EventBody) {
        let seq = self.record.last_seq + 1;
        self.record.last_seq = seq;
        if self.oldest_seq == 0 {
            self.oldest_seq = seq;
        }
        let event = Event {
            seq,
            unify_scope_id: self.id,
            body,
        };
        let payload = event.to_json();
        if self.settings.cdh_enabled && self.record.org_ids.len() > 1 {
            self.pending.batch.put_outbox(&OutboxEntry {
                scope_id: self.id,
                seq,
                payload: payload.clone(),
                attempts: 0,
                last_error: None,
            });
        }
        self.pending.batch.put_event(&EventRecord {
            scope_id: self.id,
            seq,
            payload,
        });
        self.pending.events.push(event);
    }

    /// Stages a member record with the linking values the unifier holds for it (every caller
    /// has upserted the member first, so they are the record's own).
    fn stage_member(&mut self, member: Member) {
        self.stage_with(member, WriteBatch::put_member_linked);
    }

    /// Stages a member whose only change is its profile id (its identity index stays).
    fn stage_moved_member(&mut self, member: Member) {
        self.stage_with(member, WriteBatch::put_moved_member);
    }

    /// Stages a member with `put` when the unifier holds its linking values, else in full.
    fn stage_with(
        &mut self,
        member: Member,
        put: for<'b> fn(&'b mut WriteBatch, &Member, &MemberLinks) -> &'b mut WriteBatch,
    ) {
        match self.unifier.link_values(member.id) {
            Some(links) => put(
                &mut self.pending.batch,
                &member,
                &stored_links(&self.settings.normalizer, &links),
            ),
            None => self.pending.batch.put_member(&member),
        };
        self.pending.members.insert(member.id, Some(member));
    }

    /// Reads a member of this scope, seeing the pending batch first.
    fn member(&self, id: Id) -> Result<Member, OpError> {
        let member = match self.pending.members.get(&id) {
            Some(Some(m)) => m.clone(),
            Some(None) => return Err(OpError::NotFound("member")),
            None => found(self.store.get_member(id), "member")?,
        };
        if !self.orgs.contains_key(&member.org_id) {
            return Err(OpError::NotFound("member"));
        }
        Ok(member)
    }

    /// Reads a member that belongs to `org_id`; any other member is not found.
    fn visible_member(&self, org_id: Id, id: Id) -> Result<Member, OpError> {
        let member = self.member(id)?;
        if member.org_id != org_id {
            return Err(OpError::NotFound("member"));
        }
        Ok(member)
    }

    fn identity(
        &self,
        org_id: Id,
        channel_id: Option<Id>,
        ext: &str,
    ) -> Result<Option<Id>, OpError> {
        let key = (org_id, channel_id, ext.to_owned());
        if let Some(id) = self.pending.identities.get(&key) {
            return Ok(*id);
        }
        Ok(self.store.lookup_member_by_ext(org_id, channel_id, ext)?)
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
        match self.identity(org_id, new.channel_id, &new.external_member_id) {
            Ok(Some(existing)) => return Ok(self.member(existing).map(|m| (m, false))),
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
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
        self.pending.identities.insert(
            (org_id, member.channel_id, member.external_member_id.clone()),
            Some(id),
        );
        self.stage_member(member.clone());
        self.write_moves(&delta, id)?;
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
            self.pending.batch.delete_member(&member);
            self.pending.members.insert(member_id, None);
            self.pending.identities.insert(
                (
                    member.org_id,
                    member.channel_id,
                    member.external_member_id.clone(),
                ),
                None,
            );
            self.write_moves(&delta, member_id)?;
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
        self.write_moves(&delta, member_id)?;
        self.emit_changes(&delta, op.reason(), Some(&member), now);
        Ok(Ok(Some(member)))
    }

    /// Rewrites the stored profile id of every other member the delta moved.
    fn write_moves(&mut self, delta: &Delta, except: Id) -> Result<(), ActorProcessingErr> {
        for m in &delta.moves {
            let Some(to) = m.to else { continue };
            if m.member == except {
                continue;
            }
            let mut member = self.member(m.member).map_err(|e| {
                ActorProcessingErr::from(format!("member {} of the partition: {e}", m.member))
            })?;
            member.profile_id = to;
            self.stage_member(member);
        }
        Ok(())
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

    /// Replaces the keys; when they differ, recomputes the partition and starts the job that
    /// rewrites the moved members.
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

    /// Starts rewriting the job's members: progress from zero, then chunks behind the queue.
    fn begin_job(
        &mut self,
        myself: &ActorRef<ScopeMsg>,
        job: Job,
    ) -> Result<(), ActorProcessingErr> {
        self.status.job_active.store(true, Ordering::Release);
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

    /// Rewrites the next chunk of moved members, with progress; the last chunk clears the
    /// scope's pending job in the same atomic write.
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
            // Members changed or erased since the job started are already written.
            let Some(now) = self.unifier.profile_of(m.member) else {
                continue;
            };
            let mut member = match self.member(m.member) {
                Ok(member) => member,
                Err(OpError::NotFound(_)) => continue,
                Err(e) => return Err(e.to_string().into()),
            };
            if member.profile_id != now {
                member.profile_id = now;
                self.stage_moved_member(member);
            }
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
            self.pending.finishes_job = true;
        } else {
            myself.send_message(ScopeMsg::JobChunk)?;
        }
        self.schedule_flush(myself)
    }
}
