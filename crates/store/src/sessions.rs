//! Dashboard sessions: what is kept of one (never the id itself, only its hash).

use time::OffsetDateTime;

/// A dashboard session, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSession {
    /// SHA-256 (hex) of the session id the browser holds.
    pub id_hash: String,
    /// The API key that signed in.
    pub key_id: String,
    /// The stored hash of that key (the session authenticates as the key, and ends with it).
    pub key_hash: String,
    /// The key's tenant.
    pub tenant_id: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was last used.
    pub last_seen_at: OffsetDateTime,
    /// When it ends, however much it is used.
    pub expires_at: OffsetDateTime,
}
