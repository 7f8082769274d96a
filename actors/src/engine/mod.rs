//! The pure unification engine (SPEC 2): normalization, the deterministic partition, its
//! incremental maintenance, explanations and dry runs. It knows nothing of actors, storage or
//! HTTP, so it can be property-tested and benchmarked alone.

mod attribute;
mod column;
mod dry_run;
mod explain;
mod graph;
mod index;
mod keys;
mod normalize;
mod partition;
mod phone;
mod phone_parse;
mod unifier;
mod union_find;
mod view;

pub use attribute::{ATTRIBUTE_COUNT, Attribute, UnknownAttribute};
pub use column::{COLUMN_COUNT, Column, Columns};
pub use dry_run::DryRun;
pub use explain::{Explanation, PathStep, RefusedView};
pub use graph::{ClusterGraph, GraphLink, GraphNode};
pub use keys::{KeySet, KeySetError, Limits, UnifyKey};
pub use normalize::{BlockRule, DEFAULT_BLOCKED_VALUES, NormalizeConfigError, Normalizer};
pub use partition::Refusal;
pub use unifier::{Delta, HotValue, Inserted, LinkValues, MemberId, Move, ProfileId, Unifier};
pub use view::{MergedView, ViewSource, merged_view};

#[cfg(test)]
mod phone_tests;
#[cfg(test)]
mod tests;
