//! Unify-key attributes: the only member attributes that may link members.

use std::fmt;
use std::str::FromStr;

/// An attribute that may be configured as a unify key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attribute {
    DisplayEmail,
    DisplayMobile,
    CustomId,
    LineId,
    ConnectId,
    ExternalMemberId,
}

/// Number of attributes; a member's linking values are stored as one array of this length.
pub const ATTRIBUTE_COUNT: usize = 6;

impl Attribute {
    /// Every attribute, in the order of [`Attribute::index`].
    pub const ALL: [Attribute; ATTRIBUTE_COUNT] = [
        Attribute::DisplayEmail,
        Attribute::DisplayMobile,
        Attribute::CustomId,
        Attribute::LineId,
        Attribute::ConnectId,
        Attribute::ExternalMemberId,
    ];

    /// Returns the wire name used in settings and member fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Attribute::DisplayEmail => "display_email",
            Attribute::DisplayMobile => "display_mobile",
            Attribute::CustomId => "custom_id",
            Attribute::LineId => "line_id",
            Attribute::ConnectId => "connect_id",
            Attribute::ExternalMemberId => "external_member_id",
        }
    }

    /// Returns the position of the attribute in per-member value arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Returns whether operators may edit the attribute as a member column
    /// (`external_member_id` identifies the member on its channel and is not editable).
    pub fn is_editable(self) -> bool {
        self != Attribute::ExternalMemberId
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a name that is not a unify-key attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown unify-key attribute `{0}`")]
pub struct UnknownAttribute(pub String);

impl FromStr for Attribute {
    type Err = UnknownAttribute;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Attribute::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAttribute(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for a in Attribute::ALL {
            assert_eq!(a.as_str().parse::<Attribute>(), Ok(a));
            assert_eq!(Attribute::ALL[a.index()], a);
        }
        assert!("email".parse::<Attribute>().is_err());
        assert!("Display_Email".parse::<Attribute>().is_err());
    }
}
