//! Named secrets at rest: AES-256-GCM under a master key, a fresh random nonce per value, the
//! tenant and name bound as associated data (a ciphertext moved to another row does not decrypt).
//! The master key comes from `CISTERN_MASTER_KEY` (64 hex characters or base64 of 32 bytes) or
//! a key file created with mode 0600 on first start. A check value stored in the database tells
//! a wrong key at start, before any secret is needed. `cistern secrets rotate-master-key`
//! re-encrypts every secret under a new key (`rotate_master_key`).

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cistern_store::{ResealedSecret, SealedSecret, Store};
use rand::RngCore;

const CHECK_KEY: &str = "master_key_check";
const CHECK_PLAINTEXT: &[u8] = b"cistern master key check";

/// The master key.
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| e.to_string())?
    } else {
        STANDARD.decode(t).map_err(|_| {
            "the master key must be 32 bytes written as 64 hexadecimal characters or as base64"
                .to_owned()
        })?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("the master key must be 32 bytes, got {}", b.len()))
}

impl MasterKey {
    /// The key from `value` (CISTERN_MASTER_KEY) when given, else from `file`, created with mode
    /// 0600 and a random key when it does not exist.
    pub fn load(value: Option<&str>, file: &Path) -> Result<Self, String> {
        let key = match value.filter(|v| !v.trim().is_empty()) {
            Some(v) => parse_key(v).map_err(|e| format!("CISTERN_MASTER_KEY: {e}"))?,
            None if file.exists() => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read master key file {}: {e}", file.display()))?;
                parse_key(&text).map_err(|e| format!("master key file {}: {e}", file.display()))?
            }
            None => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_key_file(file, &hex::encode(key))?;
                tracing::info!(file = %file.display(), "created a new master key file (keep it: without it, stored secrets cannot be read)");
                key
            }
        };
        Ok(Self {
            cipher: Aes256Gcm::new(&key.into()),
        })
    }

    fn from_bytes(key: [u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// The check value stored in the database: the check text sealed under this key.
    fn check_value(&self) -> String {
        let (nonce, ct) = self.encrypt(CHECK_KEY, CHECK_PLAINTEXT);
        format!("{}:{}", STANDARD.encode(nonce), STANDARD.encode(ct))
    }

    /// Encrypts `value`, bound to `context`; returns (nonce, ciphertext).
    pub fn encrypt(&self, context: &str, value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption does not fail for in-memory buffers");
        (nonce.to_vec(), ct)
    }

    /// Decrypts a value sealed with [`MasterKey::encrypt`] under the same context.
    pub fn decrypt(
        &self,
        context: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, String> {
        if nonce.len() != 12 {
            return Err("stored nonce has the wrong length".into());
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| "cannot decrypt: wrong master key or tampered data".to_owned())
    }

    /// Records the key's check value on first use, and refuses a key that is not the one the
    /// database's secrets were sealed with.
    pub async fn check(&self, store: &dyn Store) -> Result<(), String> {
        let mine = self.check_value();
        let in_force = store
            .meta_init(CHECK_KEY, &mine)
            .await
            .map_err(|e| e.to_string())?;
        let (n, c) = in_force
            .split_once(':')
            .ok_or("the stored master key check is unreadable")?;
        let n = STANDARD
            .decode(n)
            .map_err(|_| "the stored master key check is unreadable")?;
        let c = STANDARD
            .decode(c)
            .map_err(|_| "the stored master key check is unreadable")?;
        match self.decrypt(CHECK_KEY, &n, &c) {
            Ok(p) if p == CHECK_PLAINTEXT => Ok(()),
            _ => Err("the master key (CISTERN_MASTER_KEY or the key file) is not the one this database's secrets were encrypted with; use the original key".into()),
        }
    }
}

/// The associated data of a secret: which tenant and name it belongs to.
pub fn context(tenant_id: &str, name: &str) -> String {
    format!("secret:{tenant_id}:{name}")
}

fn write_key_file(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create master key file {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write master key file {}: {e}", path.display()))
}

/// Re-encrypts every secret of every tenant (current and previous values) from `old` to `new`
/// and replaces the key's check value, in one transaction: on any error nothing changes.
/// Returns the number of secrets.
pub async fn reseal_all(
    store: &dyn Store,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, String> {
    let sealed = store
        .all_sealed_secrets()
        .await
        .map_err(|e| e.to_string())?;
    let mut resealed = Vec::with_capacity(sealed.len());
    for s in sealed {
        let ctx = context(&s.tenant_id, &s.name);
        let what = |e: String| format!("secret {:?} of tenant {}: {e}", s.name, s.tenant_id);
        let value = old.decrypt(&ctx, &s.nonce, &s.ciphertext).map_err(what)?;
        let (nonce, ciphertext) = new.encrypt(&ctx, &value);
        let previous = match &s.previous {
            Some((n, c)) => {
                let value = old.decrypt(&ctx, n, c).map_err(what)?;
                Some(new.encrypt(&ctx, &value))
            }
            None => None,
        };
        resealed.push(ResealedSecret {
            new: SealedSecret {
                tenant_id: s.tenant_id.clone(),
                name: s.name.clone(),
                nonce,
                ciphertext,
                previous,
            },
            old: s,
        });
    }
    let n = resealed.len();
    store
        .reseal_secrets(resealed, CHECK_KEY, &new.check_value())
        .await
        .map_err(|e| e.to_string())?;
    Ok(n)
}

/// `path` with `suffix` appended (`cistern.key.new`).
pub fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// Rotates the master key kept in `file`: a new random key is written to `<file>.new` (0600),
/// the old one is copied to `<file>.old`, every secret is re-encrypted in one transaction, then
/// `<file>.new` replaces `<file>` (a rename: the key file is never half-written) and the copy is
/// removed. On any failure before the commit nothing changes and both extra files are removed.
/// Should the process stop between the commit and the rename, the next start finds that
/// `<file>.new` is the key in force and completes the swap (`recover_rotation`).
pub async fn rotate_master_key(store: &dyn Store, file: &Path) -> Result<usize, String> {
    if !file.exists() {
        return Err(format!(
            "no master key file at {}; rotation replaces an existing key file (set master_key_file to it)",
            file.display()
        ));
    }
    let old = MasterKey::load(None, file)?;
    old.check(store).await?;
    let new_file = sibling(file, ".new");
    let backup = sibling(file, ".old");
    if new_file.exists() {
        return Err(format!(
            "{} exists: an earlier rotation did not finish. Start the hub once (it completes a rotation whose database part was done), or remove that file if the hub starts with {}",
            new_file.display(),
            file.display()
        ));
    }
    let old_text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read master key file {}: {e}", file.display()))?;
    let _ = std::fs::remove_file(&backup);
    write_key_file(&backup, &old_text)?;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let undo = || {
        let _ = std::fs::remove_file(&new_file);
        let _ = std::fs::remove_file(&backup);
    };
    if let Err(e) = write_key_file(&new_file, &hex::encode(key)) {
        undo();
        return Err(e);
    }
    let new = MasterKey::from_bytes(key);
    let n = match reseal_all(store, &old, &new).await {
        Ok(n) => n,
        Err(e) => {
            undo();
            return Err(format!("{e}; the master key is unchanged"));
        }
    };
    std::fs::rename(&new_file, file).map_err(|e| {
        format!(
            "the secrets are re-encrypted under the key in {}, but it could not replace {}: {e}; move it there by hand",
            new_file.display(),
            file.display()
        )
    })?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable once the directory is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    let _ = std::fs::remove_file(&backup);
    Ok(n)
}

/// At start, when the key file does not open this database: if a rotation stopped between its
/// commit and its rename, `<file>.new` holds the key in force; it replaces `<file>`.
pub async fn recover_rotation(store: &dyn Store, file: &Path) -> Option<MasterKey> {
    let new_file = sibling(file, ".new");
    if !new_file.exists() {
        return None;
    }
    let key = MasterKey::load(None, &new_file).ok()?;
    key.check(store).await.ok()?;
    std::fs::rename(&new_file, file).ok()?;
    let _ = std::fs::remove_file(sibling(file, ".old"));
    tracing::warn!(file = %file.display(), "completed an interrupted master-key rotation: the new key file is in place");
    Some(key)
}

/// Reads a named secret's current value (and the previous one while its grace period lasts).
pub async fn reveal(
    store: &dyn Store,
    key: &MasterKey,
    tenant_id: &str,
    name: &str,
) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, String> {
    let Some(s) = store
        .get_secret(tenant_id, name)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let ctx = context(tenant_id, name);
    let current = key.decrypt(&ctx, &s.nonce, &s.ciphertext)?;
    let previous = match s.previous {
        Some((n, c, until)) if until > time::OffsetDateTime::now_utc() => {
            key.decrypt(&ctx, &n, &c).ok()
        }
        _ => None,
    };
    Ok(Some((current, previous)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        let k = MasterKey::load(None, &file).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (n, c) = k.encrypt("a", b"value");
        assert_eq!(k.decrypt("a", &n, &c).unwrap(), b"value");
        assert!(k.decrypt("b", &n, &c).is_err(), "bound to its context");
        let again = MasterKey::load(None, &file).unwrap();
        assert_eq!(
            again.decrypt("a", &n, &c).unwrap(),
            b"value",
            "the file keeps the key"
        );
        let other = MasterKey::load(Some(&"11".repeat(32)), &file).unwrap();
        assert!(other.decrypt("a", &n, &c).is_err());
        assert!(MasterKey::load(Some("short"), &file).is_err());
    }
}
