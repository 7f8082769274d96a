//! The JSON member object of `POST /chat/members` and of each line of an import (SPEC 4.4),
//! and its validation into a [`NewMember`].

use serde::Deserialize;
use unify_storage::{Id, Millis};

use crate::clock::parse_rfc3339;
use crate::error::{Code, OpError};
use crate::json;
use crate::ops::NewMember;

/// A member as the API receives it. Unknown fields are refused; every optional string may be
/// absent or `null`. Deserialize it with `serde_json`, then call [`MemberInput::into_new_member`]
/// to validate it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    /// The member's channel: required for caac orgs, absent for maac orgs (checked by the
    /// scope, which knows the org).
    #[serde(default, deserialize_with = "json::optional_id")]
    #[schema(value_type = Option<json::ApiId>)]
    pub channel_id: Option<Id>,
    /// Not empty nor only whitespace (`EMPTY_EXTERNAL_ID`).
    #[schema(pattern = r"\S")]
    pub external_member_id: String,
    #[serde(default)]
    pub original_name: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub display_email: Option<String>,
    #[serde(default)]
    pub display_mobile: Option<String>,
    #[serde(default)]
    pub custom_id: Option<String>,
    #[serde(default)]
    pub line_id: Option<String>,
    #[serde(default)]
    pub connect_id: Option<String>,
    /// RFC 3339 timestamp.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub last_message_at: Option<String>,
}

impl MemberInput {
    /// Validates the input: an empty (or whitespace) `external_member_id` is refused with
    /// [`Code::EmptyExternalId`] (an empty id must never become an identity), a `last_message_at`
    /// that is not RFC 3339 with `InvalidArgument`. Values are kept as written.
    pub fn into_new_member(self) -> Result<NewMember, OpError> {
        if self.external_member_id.trim().is_empty() {
            return Err(OpError::conflict(
                Code::EmptyExternalId,
                "external_member_id must not be empty",
            ));
        }
        let last_message_at = self
            .last_message_at
            .as_deref()
            .map(parse_last_message_at)
            .transpose()?;
        Ok(NewMember {
            channel_id: self.channel_id,
            external_member_id: self.external_member_id,
            original_name: self.original_name,
            display_name: self.display_name,
            display_email: self.display_email,
            display_mobile: self.display_mobile,
            custom_id: self.custom_id,
            line_id: self.line_id,
            connect_id: self.connect_id,
            last_message_at,
        })
    }
}

/// Parses one JSON member object (through [`json::parse`], like every API input): a syntax
/// error (or invalid UTF-8) is `MALFORMED_JSON`, wrong types, unknown fields and invalid values
/// are their own codes.
pub fn parse_member(bytes: &[u8]) -> Result<NewMember, OpError> {
    let input: MemberInput = json::parse(bytes)?;
    input.into_new_member()
}

/// Parses a `last_message_at` value (RFC 3339), or says why it is refused.
pub fn parse_last_message_at(text: &str) -> Result<Millis, OpError> {
    parse_rfc3339(text)
        .ok_or_else(|| OpError::invalid("last_message_at must be an RFC 3339 timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> &'static str {
        parse_member(line.as_bytes()).unwrap_err().code().as_str()
    }

    #[test]
    fn a_full_member_parses() {
        let m = parse_member(
            br#"{"channel_id": 3, "external_member_id": "U1", "display_email": null,
                 "display_mobile": "0912345678", "last_message_at": "2026-01-31T12:25:27Z"}"#,
        )
        .unwrap();
        assert_eq!(m.channel_id, Some(3));
        assert_eq!(m.external_member_id, "U1");
        assert_eq!(m.display_email, None);
        assert_eq!(m.display_mobile.as_deref(), Some("0912345678"));
        assert_eq!(m.last_message_at, parse_rfc3339("2026-01-31T12:25:27Z"));
    }

    #[test]
    fn bad_lines_get_their_codes() {
        assert_eq!(code(r#"{"external_member_id": "#), "MALFORMED_JSON");
        assert_eq!(code("\u{0}"), "MALFORMED_JSON");
        assert_eq!(
            code(r#"{"external_member_id": " "}"#),
            Code::EmptyExternalId.as_str()
        );
        assert_eq!(code(r#"{"display_email": "a@b.c"}"#), "INVALID_ARGUMENT");
        assert_eq!(
            code(r#"{"external_member_id": "x", "nickname": "y"}"#),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            code(r#"{"external_member_id": "x", "channel_id": 1e40}"#),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            code(r#"{"external_member_id": "x", "last_message_at": "yesterday"}"#),
            "INVALID_ARGUMENT"
        );
        assert!(matches!(
            parse_member(&[0xff, 0xfe]),
            Err(OpError::Conflict {
                code: Code::MalformedJson,
                ..
            })
        ));
    }
}
