//! The payload of a bulk import that crosses into the scope actor: a chunk of parsed lines,
//! and how a refused line is reported on the job record.
//!
//! A leaf: it imports no actor and no service.

use unify_storage::{Id, ImportJob, ImportLineError, ImportStatus, MemberDraft, Source};

use crate::clock::now_millis;
use crate::engine::{LinkValues, Normalizer};
use crate::error::OpError;
use crate::links::stored_links;
use crate::ops::{self, NewMember};

/// Refused lines kept on the job record.
pub const MAX_ERRORS: usize = 100;

/// One parsed line, with its linking values computed and the member encoded off the scope
/// actor.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// 1-based line number in the body.
    pub line: u64,
    pub member: NewMember,
    pub links: LinkValues,
    /// The member as it is stored, but for its id, org and creation time.
    pub draft: MemberDraft,
}

impl Prepared {
    /// Prepares line `line`, whose linking values under `normalizer` are `links`.
    pub fn new(
        line: u64,
        member: NewMember,
        links: LinkValues,
        normalizer: &Normalizer,
    ) -> Prepared {
        let record = ops::new_member(0, 0, Source::Caac, member.clone(), 0);
        let draft = MemberDraft::new(&record, &stored_links(normalizer, &links));
        Prepared {
            line,
            member,
            links,
            draft,
        }
    }
}

/// A chunk of lines for the scope actor to apply, with what the driver already knows: the lines
/// that did not parse and where the next chunk starts.
#[derive(Debug, Clone)]
pub struct ImportChunk {
    pub job_id: Id,
    /// Spool position the chunk starts at; a chunk whose start is not the job's stored
    /// position was already applied (a retry) and is answered with the stored job.
    pub from: u64,
    /// Spool position and line count after the chunk.
    pub to: u64,
    pub lines: u64,
    /// Whether the chunk ends the spool: applying it finishes the job.
    pub last: bool,
    pub members: Vec<Prepared>,
    /// Lines refused by parsing or validation before reaching the scope.
    pub refused: Vec<ImportLineError>,
}

impl ImportChunk {
    /// Returns the job record after the chunk: `done` lines applied by the scope, `refused`
    /// more refused ones (`errors` holds the first [`MAX_ERRORS`] of all).
    pub fn apply_to(&self, job: &mut ImportJob, done: u64, refused: Vec<ImportLineError>) {
        job.done += done;
        for e in self.refused.iter().cloned().chain(refused) {
            job.failed += 1;
            if job.errors.len() < MAX_ERRORS {
                job.errors.push(e);
            }
        }
        job.errors.sort_by_key(|e| e.line);
        job.position = self.to;
        job.lines = self.lines;
        if self.last {
            job.status = ImportStatus::Finished;
        }
        job.updated_at = now_millis();
    }
}

/// Returns a line's refusal as the job reports it.
pub fn line_error(line: u64, err: &OpError) -> ImportLineError {
    ImportLineError {
        line,
        code: err.code().as_str().to_owned(),
        message: err.to_string(),
    }
}
