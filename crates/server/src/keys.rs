//! API keys as a service: create, rotate with a grace, revoke, list with their state. The API
//! (`routes::keys`), the dashboard (`/admin/keys`) and the CLI (`cistern keys`) call these; none
//! holds a rule of its own. A created or rotated key is returned once, here, and never again.

use std::time::Duration;

use cistern_core::FieldError;
use cistern_store::key_rotation::KeyRotation;
use cistern_store::{ApiKeyInfo, NewApiKey, Scope, Store};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::auth::generate_key;
use crate::error::ApiError;

/// The grace of a rotation when none is given: the old key keeps working this long.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The longest grace accepted.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A key just made: its record and the key itself (to be shown this once).
pub struct Issued {
    /// The stored record.
    pub info: ApiKeyInfo,
    /// The key.
    pub secret: String,
}

/// Parses scopes (`ingest,read`), each once; at least one.
pub fn parse_scopes<'a>(
    field: &str,
    items: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Scope>, FieldError> {
    let mut out = Vec::new();
    for s in items.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
        match Scope::parse(s) {
            Some(scope) if !out.contains(&scope) => out.push(scope),
            Some(_) => {}
            None => {
                return Err(FieldError::new(
                    field,
                    format!("{s:?} is not a scope; scopes are ingest, read, admin, trigger"),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(FieldError::new(
            field,
            "names no scope; use ingest, read, admin and/or trigger",
        ));
    }
    Ok(out)
}

/// Parses a grace (`24h`, `30m`, `0s`): at most [`MAX_GRACE`].
pub fn parse_grace(field: &str, text: &str) -> Result<Duration, FieldError> {
    let d = crate::config::parse_duration(text).map_err(|e| FieldError::new(field, e))?;
    if d > MAX_GRACE {
        return Err(FieldError::new(
            field,
            format!("{text:?} is longer than the longest grace, 30 days"),
        ));
    }
    Ok(d)
}

fn checked_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(FieldError::new(
            "name",
            "is required: 1-100 characters to recognise the key by",
        ));
    }
    Ok(name.to_owned())
}

/// Creates a key.
pub async fn create(
    store: &dyn Store,
    tenant_id: &str,
    name: &str,
    scopes: Vec<Scope>,
) -> Result<Issued, ApiError> {
    let name = checked_name(name).map_err(|e| ApiError::invalid(vec![e]))?;
    let key = generate_key();
    let info = store
        .create_api_key(NewApiKey {
            tenant_id: tenant_id.to_owned(),
            name,
            prefix: key.prefix,
            hash: key.hash,
            scopes,
        })
        .await?;
    Ok(Issued {
        info,
        secret: key.secret,
    })
}

/// The key a user names by id, name or prefix: an id names any key; a name or prefix names the
/// current one (neither revoked nor rotated).
pub async fn resolve(
    store: &dyn Store,
    tenant_id: &str,
    id_or_name: &str,
) -> Result<ApiKeyInfo, ApiError> {
    let keys = store.list_api_keys(tenant_id).await?;
    if let Some(k) = keys.iter().find(|k| k.id == id_or_name) {
        return Ok(k.clone());
    }
    let rotated: Vec<String> = store
        .list_api_key_rotations(tenant_id)
        .await?
        .into_iter()
        .map(|r| r.key_id)
        .collect();
    let found: Vec<&ApiKeyInfo> = keys
        .iter()
        .filter(|k| k.name == id_or_name || k.prefix == id_or_name)
        .filter(|k| k.revoked_at.is_none() && !rotated.contains(&k.id))
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::not_found(format!(
            "no current key with id, name or prefix {id_or_name:?} (see `cistern keys list`)"
        ))),
        many => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            "Conflict",
            format!(
                "{} current keys are named {id_or_name:?}; name one by id (see `cistern keys list`)",
                many.len()
            ),
        )),
    }
}

/// Rotates a key: a new key with the same name and scopes replaces it at once, and the old one
/// keeps working for `grace`, then is refused (401, saying it was rotated).
pub async fn rotate(
    store: &dyn Store,
    tenant_id: &str,
    old: &ApiKeyInfo,
    grace: Duration,
    now: OffsetDateTime,
) -> Result<(Issued, KeyRotation), ApiError> {
    let key = generate_key();
    let info = ApiKeyInfo {
        id: cistern_store::new_id(),
        tenant_id: tenant_id.to_owned(),
        name: old.name.clone(),
        prefix: key.prefix,
        scopes: old.scopes.clone(),
        created_at: now,
        revoked_at: None,
    };
    let expires_at = now + grace;
    let rotation = store
        .rotate_api_key(tenant_id, &old.id, &info, &key.hash, expires_at, now)
        .await?;
    Ok((
        Issued {
            info,
            secret: key.secret,
        },
        rotation,
    ))
}

/// Where a key stands at `now`.
pub fn state(k: &ApiKeyInfo, rotation: Option<&KeyRotation>, now: OffsetDateTime) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else {
        match rotation {
            Some(r) if r.expired(now) => "rotated",
            Some(_) => "grace",
            None => "active",
        }
    }
}

/// A key as the API shows it (never the key itself).
pub fn key_json(k: &ApiKeyInfo, rotation: Option<&KeyRotation>, now: OffsetDateTime) -> Value {
    let rfc = crate::delivery::format::rfc3339;
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "created_at": rfc(k.created_at),
        "revoked_at": k.revoked_at.map(rfc),
        "state": state(k, rotation, now),
        "rotated_at": rotation.map(|r| rfc(r.rotated_at)),
        "expires_at": rotation.map(|r| rfc(r.expires_at)),
        "replaced_by": rotation.map(|r| r.replaced_by.clone()),
    })
}

/// The tenant's keys with their rotations, oldest first.
pub async fn list(
    store: &dyn Store,
    tenant_id: &str,
) -> Result<Vec<(ApiKeyInfo, Option<KeyRotation>)>, ApiError> {
    let keys = store.list_api_keys(tenant_id).await?;
    let rotations = store.list_api_key_rotations(tenant_id).await?;
    Ok(keys
        .into_iter()
        .map(|k| {
            let r = rotations.iter().find(|r| r.key_id == k.id).cloned();
            (k, r)
        })
        .collect())
}

/// The refusal of a key whose grace has ended.
pub fn rotated_refusal(k: &ApiKeyInfo, r: &KeyRotation) -> ApiError {
    ApiError::unauthorized(format!(
        "the API key {:?} ({}…) was rotated at {}; its grace ended at {}: use the key that replaced it ({})",
        k.name,
        k.prefix,
        crate::delivery::format::rfc3339(r.rotated_at),
        crate::delivery::format::rfc3339(r.expires_at),
        r.replaced_by
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graces_and_scopes_name_their_field() {
        assert_eq!(parse_grace("grace", "24h").unwrap(), DEFAULT_GRACE);
        assert_eq!(parse_grace("grace", "0s").unwrap(), Duration::ZERO);
        assert!(parse_grace("grace", "31d")
            .unwrap_err()
            .message
            .contains("30 days"));
        assert_eq!(parse_grace("grace", "soon").unwrap_err().field, "grace");
        assert_eq!(
            parse_scopes("scopes", ["read", "admin", "read"]).unwrap(),
            [Scope::Read, Scope::Admin]
        );
        assert!(parse_scopes("scopes", ["root"]).is_err());
        assert!(parse_scopes("scopes", [""]).is_err());
    }
}
