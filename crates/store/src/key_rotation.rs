//! Key rotation: the record that a key was replaced, and until when it keeps working.

use serde::Serialize;
use time::OffsetDateTime;

/// A rotated key: replaced by another, accepted until `expires_at` (the grace), refused after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRotation {
    /// The rotated (old) key.
    pub key_id: String,
    /// Its tenant.
    #[serde(skip)]
    pub tenant_id: String,
    /// The key that replaced it.
    pub replaced_by: String,
    /// When it was rotated.
    #[serde(with = "time::serde::rfc3339")]
    pub rotated_at: OffsetDateTime,
    /// When it stops working (the end of the grace).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl KeyRotation {
    /// True once the grace has ended at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at
    }
}

/// The name a rotated key takes, so that its name is its replacement's alone.
pub fn rotated_name(name: &str, at: OffsetDateTime) -> String {
    let at = at
        .replace_nanosecond(0)
        .unwrap_or(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!("{name} (rotated {at})")
}

/// A key as authentication reads it: with its tenant (gone: `None`) and its rotation.
#[derive(Debug, Clone)]
pub struct KeyForAuth {
    /// The key.
    pub key: crate::ApiKeyInfo,
    /// Its tenant, unless it no longer exists.
    pub tenant: Option<crate::Tenant>,
    /// Its rotation, when it was rotated.
    pub rotation: Option<KeyRotation>,
}
