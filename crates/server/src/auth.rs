//! API keys: generation (random, ≥ 128 bits, shown once), hashing (only the hash is stored), and
//! the extractor that turns a request's credentials into the calling tenant and its scopes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use cistern_store::key_rotation::KeyRotation;
use cistern_store::{ApiKeyInfo, Scope, Tenant};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::AppState;

/// Prefix of every key, so leaked keys are recognisable by scanners.
pub const KEY_PREFIX: &str = "cst_";

/// A freshly generated key: the secret (shown once) and what is stored.
pub struct GeneratedKey {
    /// The full key to hand to the user.
    pub secret: String,
    /// SHA-256 hex of the key.
    pub hash: String,
    /// The first characters, to recognise the key in lists.
    pub prefix: String,
}

/// Generates a key with 256 bits of randomness.
pub fn generate_key() -> GeneratedKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    GeneratedKey {
        hash: hash_key(&secret),
        prefix: secret[..KEY_PREFIX.len() + 8].to_owned(),
        secret,
    }
}

/// The stored form of a key. Keys carry 256 random bits, so one SHA-256 is enough: there is
/// nothing to brute-force that a slow hash would protect.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

/// Finds the key in `Authorization: ApiKey|Apikey|Bearer|Token <key>` (scheme case-insensitive),
/// a bare `Authorization: <key>`, or `X-Api-Key: <key>`.
pub fn key_from_headers(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v.to_owned());
        }
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    match auth.split_once(char::is_whitespace) {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if matches!(scheme.as_str(), "apikey" | "bearer" | "token" | "api-key") {
                let k = rest.trim();
                (!k.is_empty()).then(|| k.to_owned())
            } else {
                None
            }
        }
        None => (!auth.is_empty()).then(|| auth.to_owned()),
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its tenant.
    pub tenant: Tenant,
    /// The key used.
    pub key: ApiKeyInfo,
}

impl Caller {
    /// Fails with 403 unless the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.key.scopes.contains(&scope) || self.key.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this API key (\"{}\", {}…) lacks the `{}` scope; its scopes are: {}. Create a key with `cistern keys create --scopes {}`",
                self.key.name,
                self.key.prefix,
                scope.as_str(),
                self.key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                scope.as_str()
            )))
        }
    }
}

/// The outcome of authenticating a request: who it is, when it could be told, and the refusal.
pub struct AuthFailure {
    /// The error to answer.
    pub error: ApiError,
    /// The tenant, when the key was known (revoked or lacking a scope).
    pub tenant: Option<Tenant>,
    /// The key, when known.
    pub key_id: Option<String>,
}

/// Authenticates a request and checks `scope`.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Caller, AuthFailure> {
    let fail = |error, tenant, key_id| AuthFailure {
        error,
        tenant,
        key_id,
    };
    let Some(secret) = key_from_headers(headers) else {
        return Err(fail(
            ApiError::unauthorized(
                "no API key: send `Authorization: ApiKey <key>` (or `Bearer <key>`, or `X-Api-Key: <key>`); create one with `cistern keys create --name NAME --scopes ingest,read`",
            ),
            None,
            None,
        ));
    };
    authenticate_hash(state, hash_key(&secret), scope).await
}

/// Authenticates the key whose stored hash is `hash` (a dashboard session holds it) and checks
/// `scope`: the same checks as a key sent with the request — known, not revoked, within its
/// rate, holding the scope.
pub async fn authenticate_hash(
    state: &AppState,
    hash: String,
    scope: Scope,
) -> Result<Caller, AuthFailure> {
    let fail = |error, tenant, key_id| AuthFailure {
        error,
        tenant,
        key_id,
    };
    let (key, tenant, rotation) = match state.keys.get(&hash) {
        Some(hit) => hit,
        None => {
            let (key, tenant, rotation) = lookup(state, &hash)
                .await
                .map_err(|e| fail(e, None, None))?;
            state.keys.put(hash, &key, &tenant, rotation.as_ref());
            (key, tenant, rotation)
        }
    };
    if key.revoked_at.is_some() {
        return Err(fail(
            ApiError::unauthorized(format!(
                "the API key \"{}\" ({}…) was revoked",
                key.name, key.prefix
            )),
            Some(tenant),
            Some(key.id),
        ));
    }
    // A rotated key works until its grace ends (checked on every request, cached or not).
    if let Some(r) = rotation
        .as_ref()
        .filter(|r| r.expired(time::OffsetDateTime::now_utc()))
    {
        return Err(fail(
            crate::keys::rotated_refusal(&key, r),
            Some(tenant),
            Some(key.id),
        ));
    }
    // Rate-limited requests are not recorded in the tenant's events log: a flood must not turn
    // into a flood of writes (the metrics count them).
    if let Err(e) = state.limits.check(&key.id, || {
        format!("the API key \"{}\" ({}…)", key.name, key.prefix)
    }) {
        state.telemetry.rate_limited();
        return Err(fail(e, None, None));
    }
    let caller = Caller { tenant, key };
    if let Err(e) = caller.require(scope) {
        return Err(fail(e, Some(caller.tenant), Some(caller.key.id)));
    }
    Ok(caller)
}

/// Reads a key, its tenant and its rotation from the store, in one trip.
async fn lookup(
    state: &AppState,
    hash: &str,
) -> Result<(ApiKeyInfo, Tenant, Option<KeyRotation>), ApiError> {
    let Some(found) = state.store.key_for_auth(hash).await? else {
        return Err(ApiError::unauthorized(
            "the API key is not valid (unknown key); check it was copied whole",
        ));
    };
    match found.tenant {
        Some(t) => Ok((found.key, t, found.rotation)),
        None => Err(ApiError::unauthorized(
            "the API key's tenant no longer exists",
        )),
    }
}

/// Known keys (by hash) with their tenant, remembered for a short time so that a busy sender does
/// not cost two database reads per request. Only keys found in the store are kept (a stranger
/// guessing keys cannot fill it), the map is bounded, and an entry is trusted for `ttl` only: a
/// key revoked with the CLI (which writes the database directly) stops working within `ttl`.
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, CacheEntry>>,
}

/// When an entry was read, the key, its tenant and its rotation.
type CacheEntry = (Instant, ApiKeyInfo, Tenant, Option<KeyRotation>);

/// Most keys remembered at once; past it the cache starts again empty.
const KEY_CACHE_CAPACITY: usize = 4096;

impl KeyCache {
    /// A cache trusting entries for `ttl` (zero: never remembers).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, hash: &str) -> Option<(ApiKeyInfo, Tenant, Option<KeyRotation>)> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(hash) {
            Some((at, key, tenant, rotation)) if at.elapsed() < self.ttl => {
                Some((key.clone(), tenant.clone(), rotation.clone()))
            }
            Some(_) => {
                map.remove(hash);
                None
            }
            None => None,
        }
    }

    fn put(&self, hash: String, key: &ApiKeyInfo, tenant: &Tenant, rotation: Option<&KeyRotation>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= KEY_CACHE_CAPACITY {
            map.clear();
        }
        map.insert(
            hash,
            (
                Instant::now(),
                key.clone(),
                tenant.clone(),
                rotation.cloned(),
            ),
        );
    }

    /// Forgets a key (by id): this node sees its change (rotation, revocation) at once.
    pub fn forget_key(&self, key_id: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, k, _, _)| k.id != key_id);
    }
}

/// Extractor for read routes: a caller with the `read` scope.
pub struct Reader(pub Caller);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers, Scope::Read)
            .await
            .map(Reader)
            .map_err(|f| f.error)
    }
}

/// Extractor for admin routes: a caller with the `admin` scope.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers, Scope::Admin)
            .await
            .map(Admin)
            .map_err(|f| f.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn key_and_tenant() -> (ApiKeyInfo, Tenant) {
        let tenant = Tenant {
            id: "t1".into(),
            slug: "acme".into(),
            strict: false,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let key = ApiKeyInfo {
            id: "k1".into(),
            tenant_id: "t1".into(),
            name: "ci".into(),
            prefix: "cst_abcd".into(),
            scopes: vec![Scope::Ingest],
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            revoked_at: None,
        };
        (key, tenant)
    }

    #[test]
    fn the_key_cache_remembers_for_its_ttl_only() {
        let (key, tenant) = key_and_tenant();
        let off = KeyCache::new(Duration::ZERO);
        off.put("h".into(), &key, &tenant, None);
        assert!(off.get("h").is_none(), "a zero TTL never remembers");

        // A TTL no pause of the test thread can outlast, then one that is surely over: the
        // test does not depend on how fast it runs.
        let cache = KeyCache::new(Duration::from_secs(3600));
        assert!(cache.get("h").is_none());
        cache.put("h".into(), &key, &tenant, None);
        let (k, t, _) = cache.get("h").expect("remembered");
        assert_eq!((k.id.as_str(), t.slug.as_str()), ("k1", "acme"));
        assert!(cache.get("other").is_none());
        let short = KeyCache::new(Duration::from_millis(20));
        short.put("h".into(), &key, &tenant, None);
        std::thread::sleep(Duration::from_millis(60));
        assert!(short.get("h").is_none(), "expired");
    }

    #[test]
    fn keys_are_long_random_and_hashed() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.len() >= KEY_PREFIX.len() + 32);
        assert_eq!(a.hash, hash_key(&a.secret));
        assert!(!a.hash.contains(&a.secret[KEY_PREFIX.len()..]));
    }

    #[test]
    fn schemes_are_case_insensitive() {
        for v in [
            "ApiKey k1",
            "apikey k1",
            "APIKEY k1",
            "Bearer k1",
            "bearer  k1",
            "k1",
        ] {
            let mut h = HeaderMap::new();
            h.insert("authorization", HeaderValue::from_str(v).unwrap());
            assert_eq!(key_from_headers(&h).as_deref(), Some("k1"), "{v}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(key_from_headers(&h).as_deref(), Some("k2"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic dXNlcg=="));
        assert_eq!(key_from_headers(&h), None);
    }
}
