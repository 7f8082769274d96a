//! The scope's side of a bulk import: one chunk of prepared lines applied with the job record
//! in one atomic write and one flush (see `import.rs`).

use hashbrown::{HashMap, HashSet};

use unify_storage::{
    Id, IdKind, ImportJob, ImportLineError, ImportStatus, MemberWrite, Source, StoredMember,
};

use super::{Reply, ScopeState};
use crate::clock::{now_millis, rfc3339};
use crate::engine::LinkValues;
use crate::error::OpError;
use crate::events::{EventBody, Reason, profile_events_knowing};
use crate::protocol::import::{ImportChunk, line_error};
use ractor::ActorProcessingErr;

impl ScopeState {
    /// Applies a chunk unless it was applied already, commits at once and answers with the job.
    pub(super) async fn import_chunk(
        &mut self,
        org_id: Id,
        chunk: &ImportChunk,
        reply: Reply<ImportJob>,
    ) -> Result<(), ActorProcessingErr> {
        let stored = match self.import_job(org_id, chunk.job_id) {
            Ok(job) => job,
            Err(e) => {
                let _ = reply.send(Err(e));
                return Ok(());
            }
        };
        if stored.status == ImportStatus::Running && stored.position < chunk.from {
            // A chunk sent ahead of one that is not applied (the scope restarted meanwhile):
            // the driver sends it again after that one.
            let _ = reply.send(Err(OpError::Unavailable(
                "an earlier chunk of the import is not applied yet".into(),
            )));
            return Ok(());
        }
        if stored.status != ImportStatus::Running || stored.position != chunk.from {
            // A retry of a chunk already applied.
            self.respond(reply, Ok(stored));
            return Ok(());
        }
        if !self.orgs.contains_key(&org_id) {
            let _ = reply.send(Err(OpError::NotFound("organization")));
            return Ok(());
        }
        let mut job = stored;
        self.importing_until =
            (!chunk.last).then(|| std::time::Instant::now() + super::IMPORT_PAUSE);
        let (done, refused) = self.import_members(org_id, chunk)?;
        chunk.apply_to(&mut job, done, refused);
        self.emit(EventBody::MergeProgress {
            done: job.done + job.failed,
            total: job.total,
            is_finished: job.status != ImportStatus::Running,
        });
        self.pending.batch.put_import_job(&job);
        // Kept once finished too: a retry of the last chunk must find it applied even before
        // the lane has written it.
        self.import_jobs.insert(job.id, job.clone());
        self.respond(reply, Ok(job));
        self.commit().await
    }

    /// Returns an import job of org `org_id` as the scope holds it: as staged when a chunk of
    /// it was applied (the store may not show that batch yet), else as stored.
    fn import_job(&self, org_id: Id, job_id: Id) -> Result<ImportJob, OpError> {
        let job = match self.import_jobs.get(&job_id) {
            Some(job) => job.clone(),
            None => self.store.get_import_job(job_id)?,
        };
        if job.org_id != org_id {
            return Err(OpError::NotFound("import job"));
        }
        Ok(job)
    }

    /// Marks a running job failed with `reason`, in the scope's own view of its jobs and in the
    /// store, and answers once that is durable. A job that is no longer running is left as it
    /// is.
    pub(super) async fn fail_import(
        &mut self,
        org_id: Id,
        job_id: Id,
        reason: String,
        reply: Reply<()>,
    ) -> Result<(), ActorProcessingErr> {
        let mut job = match self.import_job(org_id, job_id) {
            Ok(job) => job,
            Err(e) => {
                let _ = reply.send(Err(e));
                return Ok(());
            }
        };
        if job.status != ImportStatus::Running {
            self.respond(reply, Ok(()));
            return Ok(());
        }
        job.status = ImportStatus::Failed;
        job.failure = Some(reason);
        job.updated_at = now_millis();
        self.pending.batch.put_import_job(&job);
        self.import_jobs.insert(job.id, job);
        self.respond(reply, Ok(()));
        self.commit().await
    }

    /// Creates the chunk's new members (existing identities count as done) and stages them
    /// with the `import` events. Returns the lines applied and refused.
    fn import_members(
        &mut self,
        org_id: Id,
        chunk: &ImportChunk,
    ) -> Result<(u64, Vec<ImportLineError>), ActorProcessingErr> {
        let source = self.orgs[&org_id].source;
        let mut channels: HashMap<Option<Id>, Result<(), OpError>> = HashMap::new();
        let mut refused = Vec::new();
        let mut done = 0;
        let mut fresh = Vec::new();
        // Identities created by this chunk, so that a repeated one later in it is found.
        let mut seen: HashSet<(Option<Id>, &str)> = HashSet::with_capacity(chunk.members.len());
        for (i, p) in chunk.members.iter().enumerate() {
            let valid = channels
                .entry(p.member.channel_id)
                .or_insert_with(|| self.check_channel(org_id, source, p.member.channel_id));
            if let Err(e) = valid {
                refused.push(line_error(p.line, e));
                continue;
            }
            let ext = p.member.external_member_id.as_str();
            if self.identity(org_id, p.member.channel_id, ext).is_some()
                || !seen.insert((p.member.channel_id, ext))
            {
                done += 1;
            } else {
                fresh.push(i);
            }
        }
        if fresh.is_empty() {
            return Ok((done, refused));
        }
        let ids = self
            .store
            .allocate_ids(IdKind::Member, fresh.len() as u64)
            .map_err(|e| ActorProcessingErr::from(e.to_string()))?;
        let now = now_millis();
        let created: Vec<(Id, usize)> = ids.zip(fresh).collect();
        let upserts: Vec<(Id, &LinkValues)> = created
            .iter()
            .map(|&(id, i)| (id, &chunk.members[i].links))
            .collect();
        let inserted = self.unifier.insert_new(&upserts);
        done += created.len() as u64;
        for (&(id, i), &profile_id) in created.iter().zip(&inserted.profile_ids) {
            let prepared = &chunk.members[i];
            let stored = StoredMember::complete(&prepared.draft, id, org_id, source, now);
            // An imported member has no username.
            self.roster.put(stored.clone(), None, profile_id);
            self.pending.writes.push((org_id, MemberWrite::Put(stored)));
        }
        // The chunk's members entered the roster in their profiles; members that were there
        // before move.
        for m in inserted.delta.moves.iter().filter(|m| m.from.is_some()) {
            if let Some(to) = m.to {
                self.roster.set_profile(m.member, to);
            }
        }
        let at = rfc3339(now);
        let events = profile_events_knowing(
            &inserted.delta,
            &self.unifier,
            inserted.profiles,
            Reason::Import,
            &at,
        );
        for body in events {
            self.emit(body);
        }
        Ok((done, refused))
    }

    /// Checks a member's channel against its org (SPEC 4.4), like a single create does.
    fn check_channel(
        &self,
        org_id: Id,
        source: Source,
        channel_id: Option<Id>,
    ) -> Result<(), OpError> {
        match (source, channel_id) {
            (Source::Caac, None) => Err(OpError::invalid(
                "a member of a caac organization needs a channel_id",
            )),
            (Source::Caac, Some(channel_id)) => match self.store.get_channel(channel_id) {
                Ok(channel) if channel.org_id == org_id => Ok(()),
                Err(e) if !e.is_not_found() => Err(e.into()),
                _ => Err(OpError::invalid(format!(
                    "channel {channel_id} is not a channel of this organization"
                ))),
            },
            (Source::Maac, Some(_)) => Err(OpError::invalid(
                "a member of a maac organization has no channel_id",
            )),
            (Source::Maac, None) => Ok(()),
        }
    }
}
