//! The payload of a bulk import that crosses into the scope actor: a chunk of parsed lines,
//! and how a refused line is reported on the job record.
//!
//! A leaf: it imports no actor and no service.

use unify_storage::{DraftFields, Id, ImportJob, ImportLineError, ImportStatus, MemberDraft};

use crate::clock::now_millis;
use crate::engine::{LinkValues, Normalizer};
use crate::error::OpError;
use crate::ops::NewMember;

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
        // As `ops::new_member` makes the record: no username, not under manual unification.
        let fields = DraftFields {
            channel_id: member.channel_id,
            external_member_id: &member.external_member_id,
            original_name: member.original_name.as_deref(),
            display_name: member.display_name.as_deref(),
            username: None,
            display_email: member.display_email.as_deref(),
            display_mobile: member.display_mobile.as_deref(),
            custom_id: member.custom_id.as_deref(),
            line_id: member.line_id.as_deref(),
            connect_id: member.connect_id.as_deref(),
            manual_unification: false,
            last_message_at: member.last_message_at,
        };
        let draft = MemberDraft::new(&fields, normalizer.fingerprint(), &links.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::stored_links;
    use crate::ops;
    use unify_storage::{Source, StoredMember};

    #[test]
    fn a_prepared_line_completes_to_the_member_a_create_stores() {
        let normalizer = Normalizer::default();
        let member = NewMember {
            channel_id: Some(3),
            external_member_id: "U1".into(),
            original_name: Some("Ann".into()),
            display_name: Some("Ann L".into()),
            display_email: Some("ann@example.com".into()),
            display_mobile: Some("0912 345 678".into()),
            custom_id: Some("c-1".into()),
            line_id: None,
            connect_id: Some("k".into()),
            last_message_at: Some(7),
        };
        let links = LinkValues(std::array::from_fn(|i| {
            (i % 2 == 0).then(|| format!("value {i}"))
        }));
        let prepared = Prepared::new(1, member.clone(), links.clone(), &normalizer);
        for source in [Source::Caac, Source::Maac] {
            let record = ops::new_member(42, 9, source, member.clone(), 1_000);
            assert_eq!(
                StoredMember::complete(&prepared.draft, 42, 9, source, 1_000),
                StoredMember::new(&record, &stored_links(&normalizer, &links))
            );
        }
    }
}
