//! Rule-change dry runs: what a new key setting would do to the partition, changing nothing.

use std::collections::HashMap;

use super::keys::KeySet;
use super::unifier::{ProfileId, Unifier};

/// The effect a key setting would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DryRun {
    pub profiles_before: u64,
    pub profiles_after: u64,
    /// Members whose profile id would change.
    pub members_moved: u64,
    /// Profiles after that would hold members of two or more profiles before.
    pub profiles_merged: u64,
    /// Profiles before whose members would be spread over two or more profiles after.
    pub profiles_split: u64,
}

impl Unifier {
    /// Computes the partition under `keys` and compares it with the current one.
    pub fn dry_run(&self, keys: &KeySet) -> DryRun {
        let after = self.rebuild_profiles(keys);
        let mut report = DryRun::default();
        // For each profile, the first counterpart seen and whether a second one appeared.
        let mut sources: HashMap<ProfileId, (ProfileId, bool)> = HashMap::new();
        let mut targets: HashMap<ProfileId, (ProfileId, bool)> = HashMap::new();
        for (slot, &id) in self.ids.iter().enumerate() {
            if id == 0 {
                continue;
            }
            let (old, new) = (self.profile[slot], after[slot]);
            report.profiles_before += u64::from(old == id);
            report.profiles_after += u64::from(new == id);
            report.members_moved += u64::from(old != new);
            note(&mut sources, new, old);
            note(&mut targets, old, new);
        }
        report.profiles_merged = sources.values().filter(|(_, many)| *many).count() as u64;
        report.profiles_split = targets.values().filter(|(_, many)| *many).count() as u64;
        report
    }
}

fn note(seen: &mut HashMap<ProfileId, (ProfileId, bool)>, key: ProfileId, other: ProfileId) {
    let entry = seen.entry(key).or_insert((other, false));
    if entry.0 != other {
        entry.1 = true;
    }
}
