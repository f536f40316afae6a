//! What both backends share about triggers: how a target is kept in its column, and the
//! messages an event carries as its dispatch moves on.

use crate::TriggerTarget;

/// A target as kept in its column (JSON).
pub fn target_text(t: &TriggerTarget) -> String {
    serde_json::to_string(t).unwrap_or_else(|_| "{}".into())
}

/// A target read back from its column (`None` when unreadable).
pub fn target_from_text(s: &str) -> Option<TriggerTarget> {
    serde_json::from_str(s).ok()
}

/// The message of an event waiting for its first attempt.
pub const QUEUED_MESSAGE: &str = "Waiting to be sent to the target";

/// The message of a pending event that expired before the target took it.
pub const EXPIRED_MESSAGE: &str =
    "Target did not execute: the event expired (trigger_expire_after) before the target could be reached";

/// The message of an event whose trigger was deleted before it was sent.
pub const DELETED_MESSAGE: &str =
    "Target did not execute: the trigger was deleted before the event was sent";

/// The hash a trigger token is kept as (SHA-256, hex). Tokens are 128 random bits, so a plain
/// hash is enough: nothing to stretch, as with API keys.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}
