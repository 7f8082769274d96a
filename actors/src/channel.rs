//! Channel input and its checks: the settings of a channel to create or to change, the
//! channel types, and the checks of a tenant key and of a contact API (SPEC 4.4, 6).
//!
//! A leaf: it imports no actor and no service. The directory applies these checks before it
//! writes a channel; the tenant-key detection that needs the contact API is the directory's.

use unify_storage::{Channel, ContactApi};

use crate::error::OpError;

/// Channel types a channel may have.
pub const CHANNEL_TYPES: &[&str] = &[
    "line",
    "fb",
    "instagram",
    "whatsapp",
    "feishu",
    "webchat",
    "other",
];

/// A channel to create.
#[derive(Debug, Clone, Default)]
pub struct NewChannel {
    pub name: String,
    pub channel_type: String,
    pub tenant_key: Option<String>,
    pub auto_provision: bool,
    pub contact_api: Option<ContactApi>,
}

/// A partial update of a channel's settings: `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPatch {
    pub name: Option<String>,
    /// `Some(None)` clears the tenant key.
    pub tenant_key: Option<Option<String>>,
    pub auto_provision: Option<bool>,
    /// `Some(None)` removes the contact API.
    pub contact_api: Option<Option<ContactApi>>,
}

impl NewChannel {
    /// Checks the settings that need no lookup: the tenant key and the contact API.
    pub fn check_settings(&self) -> Result<(), OpError> {
        check_tenant_key(self.tenant_key.as_deref())?;
        if let Some(api) = &self.contact_api {
            check_contact_api(api)?;
        }
        Ok(())
    }

    /// Checks the name and the type.
    pub fn check_name_and_type(&self) -> Result<(), OpError> {
        check_name(&self.name)?;
        if !CHANNEL_TYPES.contains(&self.channel_type.as_str()) {
            return Err(OpError::invalid(format!(
                "type must be one of {}",
                CHANNEL_TYPES.join(", ")
            )));
        }
        Ok(())
    }
}

impl ChannelPatch {
    /// Checks the settings the patch changes that need no lookup: the tenant key and the
    /// contact API.
    pub fn check_settings(&self) -> Result<(), OpError> {
        if let Some(tenant_key) = &self.tenant_key {
            check_tenant_key(tenant_key.as_deref())?;
        }
        if let Some(Some(api)) = &self.contact_api {
            check_contact_api(api)?;
        }
        Ok(())
    }

    /// Returns the contact API to detect the tenant key from when the channel after the
    /// patch auto-provisions without a tenant key (`Some(None)`: it has no contact API).
    pub fn needs_tenant(&self, current: &Channel) -> Option<Option<ContactApi>> {
        let tenant_key = self
            .tenant_key
            .clone()
            .unwrap_or(current.tenant_key.clone());
        let auto_provision = self.auto_provision.unwrap_or(current.auto_provision);
        let contact_api = self
            .contact_api
            .clone()
            .unwrap_or(current.contact_api.clone());
        (auto_provision && tenant_key.is_none()).then_some(contact_api)
    }

    /// Applies the patch to a channel (`updated_at` is the caller's).
    pub fn apply(self, channel: &mut Channel) -> Result<(), OpError> {
        if let Some(name) = self.name {
            check_name(&name)?;
            channel.name = name;
        }
        if let Some(tenant_key) = self.tenant_key {
            channel.tenant_key = tenant_key;
        }
        if let Some(auto_provision) = self.auto_provision {
            channel.auto_provision = auto_provision;
        }
        if let Some(contact_api) = self.contact_api {
            channel.contact_api = contact_api;
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), OpError> {
    if name.trim().is_empty() {
        return Err(OpError::invalid("name must not be empty"));
    }
    Ok(())
}

pub fn check_tenant_key(tenant_key: Option<&str>) -> Result<(), OpError> {
    match tenant_key {
        Some(k) if k.trim().is_empty() => Err(OpError::invalid(
            "tenant_key must not be empty (null removes it)",
        )),
        _ => Ok(()),
    }
}

/// Checks a channel as it is about to be saved: an auto-provisioning channel needs a tenant
/// key (detection happens before, in the directory).
pub fn check_channel(channel: &Channel) -> Result<(), OpError> {
    check_tenant_key(channel.tenant_key.as_deref())?;
    if let Some(api) = &channel.contact_api {
        check_contact_api(api)?;
    }
    if channel.auto_provision && channel.tenant_key.is_none() {
        return Err(OpError::invalid(
            "auto_provision needs a tenant_key, or a contact_api to detect it from",
        ));
    }
    Ok(())
}

/// Checks a contact API's settings: an http(s) URL with a host and a token.
pub fn check_contact_api(api: &ContactApi) -> Result<(), OpError> {
    let url = reqwest::Url::parse(&api.url)
        .map_err(|e| OpError::invalid(format!("contact_api.url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(OpError::invalid(
            "contact_api.url must be an http or https URL",
        ));
    }
    if api.token.trim().is_empty() {
        return Err(OpError::invalid("contact_api.token must not be empty"));
    }
    Ok(())
}
