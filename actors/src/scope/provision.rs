//! Provisioning decisions of the scope actor (SPEC 6): get-or-create of a sender's member,
//! enrichment unless manually unified, the org-unique username and link-code redemption.
//! They are made here because the scope serializes every write of its orgs: two senders can
//! never both take one username, and one code is never redeemed twice.

use std::collections::HashMap;

use ractor::ActorProcessingErr;
use unify_storage::{AcceptedEvent, Id, LinkCode, Member};

use super::ScopeState;
use crate::clock::now_millis;
use crate::error::OpError;
use crate::events::Reason;
use crate::links::{attribute_value, member_links};
use crate::ops::{MemberOp, NewMember};
use crate::protocol::{EventProfile, Provisioned, Redemption, Sender};
use crate::provision::{username_base, username_candidate};

/// Username candidates probed before provisioning gives up (`base`, `base-2`, ...).
const MAX_USERNAME_PROBES: u32 = 10_000;

/// What provisioning staged in batches the store may not show yet, read before the store.
#[derive(Debug, Default)]
pub(super) struct Staged {
    /// Link codes redeemed.
    codes: HashMap<String, LinkCode>,
}

/// The result of a scope step: the outer error is fatal for the actor.
type Step<T> = Result<Result<T, OpError>, ActorProcessingErr>;

/// Unwraps an operation result inside a [`Step`], answering its error.
macro_rules! attempt {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.into())),
        }
    };
}

impl ScopeState {
    /// Finds or creates the sender's member and, unless it is manually unified, writes the
    /// profile's values onto it; the sender's event is marked provisioned in the same batch.
    pub(super) fn provision(
        &mut self,
        sender: Sender,
        profile: Option<EventProfile>,
    ) -> Step<Provisioned> {
        let event = sender.event.clone();
        let provisioned = self.provision_sender(sender, profile)?;
        if provisioned.is_ok() {
            self.mark_provisioned(event);
        }
        Ok(provisioned)
    }

    /// Stages the accepted event as provisioned, in the batch that holds its effect (or, when
    /// provisioning changed nothing, alone: the reply then waits for it to be durable).
    fn mark_provisioned(&mut self, event: Option<AcceptedEvent>) {
        if let Some(event) = event {
            self.pending.batch.put_accepted_event(&AcceptedEvent {
                pending: None,
                ..event
            });
        }
    }

    fn provision_sender(
        &mut self,
        sender: Sender,
        profile: Option<EventProfile>,
    ) -> Step<Provisioned> {
        let existing = self.identity(
            sender.org_id,
            Some(sender.channel_id),
            &sender.external_member_id,
        );
        match existing {
            None => self.provision_new(&sender, profile.as_ref()),
            Some(id) => {
                let member = attempt!(self.visible_member(sender.org_id, id));
                let member = attempt!(self.enrich(member, &sender, profile.as_ref())?);
                Ok(Ok(Provisioned {
                    member,
                    created: false,
                }))
            }
        }
    }

    /// Creates the sender's member with the profile's values and a free username.
    fn provision_new(
        &mut self,
        sender: &Sender,
        profile: Option<&EventProfile>,
    ) -> Step<Provisioned> {
        let email = profile.and_then(|p| p.display_email.clone());
        let base = username_base(
            email.as_deref(),
            &sender.channel_type,
            &sender.external_member_id,
        );
        let username = attempt!(self.free_username(sender.org_id, &base));
        let profile_name = profile.and_then(|p| p.name.clone());
        let new = NewMember {
            channel_id: Some(sender.channel_id),
            external_member_id: sender.external_member_id.clone(),
            original_name: sender.name.clone().or_else(|| profile_name.clone()),
            display_name: profile_name.or_else(|| sender.name.clone()),
            display_email: email,
            display_mobile: profile.and_then(|p| p.display_mobile.clone()),
            last_message_at: sender.last_message_at,
            ..NewMember::default()
        };
        let (mut member, created) =
            attempt!(self.create(sender.org_id, new, Reason::Provisioned)?);
        if created {
            self.claim_username(&mut member, username);
        }
        Ok(Ok(Provisioned { member, created }))
    }

    /// Writes a profile's values onto an existing member, a newer `last_message_at`, and a
    /// username if it has none. The profile is not written onto a manually unified member:
    /// operator decisions are authoritative.
    fn enrich(
        &mut self,
        mut member: Member,
        sender: &Sender,
        profile: Option<&EventProfile>,
    ) -> Step<Member> {
        let mut changed = false;
        if let Some(at) = sender.last_message_at
            && member.last_message_at.is_none_or(|last| last < at)
        {
            member.last_message_at = Some(at);
            changed = true;
        }
        if let Some(profile) = profile.filter(|_| !member.manual_unification) {
            let values = [
                (&mut member.display_email, &profile.display_email),
                (&mut member.display_mobile, &profile.display_mobile),
            ];
            for (column, value) in values {
                if let Some(v) = value.as_ref().filter(|v| !v.trim().is_empty())
                    && column.as_ref() != Some(v)
                {
                    *column = Some(v.clone());
                    changed = true;
                }
            }
            if member.display_name.is_none() && profile.name.is_some() {
                member.display_name = profile.name.clone();
                changed = true;
            }
        }
        let username = if member.username.is_none() {
            let base = username_base(
                member.display_email.as_deref(),
                &sender.channel_type,
                &member.external_member_id,
            );
            Some(attempt!(self.free_username(member.org_id, &base)))
        } else {
            None
        };
        if !changed && username.is_none() {
            return Ok(Ok(member));
        }
        let now = now_millis();
        member.updated_at = now.max(member.updated_at);
        if let Some(username) = username {
            self.claim_username(&mut member, username);
        }
        let id = member.id;
        let delta = self
            .unifier
            .upsert(id, &member_links(&self.settings.normalizer, &member));
        member.profile_id = self.unifier.profile_of(id).unwrap_or(id);
        self.stage_member(member.clone());
        self.apply_moves(&delta);
        self.emit_changes(&delta, Reason::Provisioned, Some(&member), now);
        Ok(Ok(member))
    }

    /// Returns the first free username of the org from `base`: `base`, `base-2`, `base-3` ...
    /// A storage error is an error, never "free".
    fn free_username(&self, org_id: Id, base: &str) -> Result<String, OpError> {
        for n in 1..=MAX_USERNAME_PROBES {
            let candidate = username_candidate(base, n);
            if self.roster.username(org_id, &candidate).is_none() {
                return Ok(candidate);
            }
        }
        Err(OpError::Unavailable(format!(
            "no free username from {base:?} after {MAX_USERNAME_PROBES} candidates"
        )))
    }

    /// Gives the (staged) member a username found free (the roster indexes it).
    fn claim_username(&mut self, member: &mut Member, username: String) {
        member.username = Some(username);
        self.stage_member(member.clone());
    }

    /// Redeems a link code: the sender's member (created if needed) is change-unified onto
    /// the code member's highest-priority editable unify-key value, and the code is used up
    /// and the sender's event marked provisioned in the same atomic write.
    pub(super) fn redeem_link_code(&mut self, sender: Sender, code: String) -> Step<Redemption> {
        let event = sender.event.clone();
        let redemption = self.redeem(sender, code)?;
        if redemption.is_ok() {
            self.mark_provisioned(event);
        }
        Ok(redemption)
    }

    fn redeem(&mut self, sender: Sender, code: String) -> Step<Redemption> {
        let now = now_millis();
        let record = match self.staged.codes.get(&code) {
            Some(record) => Some(record.clone()),
            None => attempt!(self.store.get_link_code(&code)),
        };
        let Some(mut record) = record else {
            return Ok(Ok(Redemption::Unknown));
        };
        if record.used_by.is_some() {
            return Ok(Ok(Redemption::Used));
        }
        if record.expires_at <= now {
            return Ok(Ok(Redemption::Expired));
        }
        let target = match self.member(record.member_id) {
            Ok(target) if target.org_id == record.org_id => target,
            Ok(_) | Err(OpError::NotFound(_)) => return Ok(Ok(Redemption::Unknown)),
            Err(e) => return Ok(Err(e)),
        };
        let key_value = self
            .unifier
            .keys()
            .attributes()
            .filter(|a| a.is_editable())
            .find_map(|a| {
                attribute_value(&target, a)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (a, v.to_owned()))
            });
        let Some((attribute, value)) = key_value else {
            return Ok(Ok(Redemption::NoKeyValue));
        };
        let found = self.identity(
            sender.org_id,
            Some(sender.channel_id),
            &sender.external_member_id,
        );
        let member = match found {
            Some(id) => attempt!(self.visible_member(sender.org_id, id)),
            None => attempt!(self.provision_new(&sender, None)?).member,
        };
        let member = if member.id == target.id {
            member
        } else {
            let op = MemberOp::ChangeUnification { attribute, value };
            match attempt!(self.mutate(sender.org_id, member.id, op)?) {
                Some(member) => member,
                None => return Ok(Err(OpError::NotFound("member"))),
            }
        };
        record.used_by = Some(member.id);
        record.used_at = Some(now);
        self.pending.batch.put_link_code(&record);
        self.staged.codes.insert(code, record);
        Ok(Ok(Redemption::Joined {
            target: target.id,
            member: Box::new(member),
        }))
    }
}
