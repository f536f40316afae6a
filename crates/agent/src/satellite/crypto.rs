//! Encrypted configuration files, in the format of the satellite Cistern replaces (Jasypt's
//! `AES256TextEncryptor`), so that a file encrypted for it keeps working:
//!
//! `base64( salt[16] ‖ iv[16] ‖ AES-256-CBC/PKCS7(plaintext) )`, with the key
//! `PBKDF2-HMAC-SHA512(password as UTF-8, salt, 1000 iterations, 32 bytes)`.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::Sha512;

/// Salt length (Jasypt's `RandomSaltGenerator` for this encryptor).
pub const SALT_LEN: usize = 16;
/// IV length (one AES block).
pub const IV_LEN: usize = 16;
/// PBKDF2 iterations (Jasypt's default).
pub const ITERATIONS: u32 = 1000;

type Encryptor = cbc::Encryptor<aes::Aes256>;
type Decryptor = cbc::Decryptor<aes::Aes256>;

/// Why a text could not be decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Not base64 at all.
    #[error("the encrypted text is not base64 ({0})")]
    NotBase64(String),
    /// Too short to hold salt, IV and one block.
    #[error(
        "the encrypted text is too short ({0} bytes; salt, IV and at least one block take 48)"
    )]
    TooShort(usize),
    /// Padding or text check failed: almost always a wrong password.
    #[error("wrong password (or the file was not encrypted with `cistern satellite encrypt` or the Ingestion Satellite's Encrypt)")]
    WrongPassword,
}

fn key(password: &str, salt: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, ITERATIONS, &mut key);
    key
}

/// Encrypts with a fresh random salt and IV; returns the base64 text (one line).
pub fn encrypt(plaintext: &[u8], password: &str) -> String {
    encrypt_with(
        plaintext,
        password,
        rand::random::<[u8; SALT_LEN]>(),
        rand::random::<[u8; IV_LEN]>(),
    )
}

/// Encrypts with the given salt and IV (for tests and cross-checks).
pub fn encrypt_with(
    plaintext: &[u8],
    password: &str,
    salt: [u8; SALT_LEN],
    iv: [u8; IV_LEN],
) -> String {
    let key = key(password, &salt);
    let ct = Encryptor::new(&key.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut out = Vec::with_capacity(SALT_LEN + IV_LEN + ct.len());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ct);
    STANDARD.encode(out)
}

/// Decrypts base64 text (whitespace and line breaks ignored).
pub fn decrypt(text: &str, password: &str) -> Result<Vec<u8>, CryptoError> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| CryptoError::NotBase64(e.to_string()))?;
    let body = raw.len().saturating_sub(SALT_LEN + IV_LEN);
    if body < 16 || body % 16 != 0 {
        return Err(CryptoError::TooShort(raw.len()));
    }
    let (salt, rest) = raw.split_at(SALT_LEN);
    let (iv, ct) = rest.split_at(IV_LEN);
    let key = key(password, salt);
    let iv: [u8; IV_LEN] = iv
        .try_into()
        .map_err(|_| CryptoError::TooShort(raw.len()))?;
    Decryptor::new(&key.into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ct)
        .map_err(|_| CryptoError::WrongPassword)
}

/// Decrypts a configuration text: the plaintext must be UTF-8 (a wrong password that happens
/// to leave valid padding almost never leaves valid UTF-8).
pub fn decrypt_text(text: &str, password: &str) -> Result<String, CryptoError> {
    String::from_utf8(decrypt(text, password)?).map_err(|_| CryptoError::WrongPassword)
}

/// Whether a file's text is an encrypted configuration rather than YAML: base64 only, long
/// enough for salt, IV and a block. (A YAML configuration always has a `key: value` colon.)
pub fn looks_encrypted(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    compact.len() >= 64
        && compact
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_random_salt() {
        let text = "satellite:\n  url: https://hub.example\n  api_key: cst_x\n";
        let a = encrypt(text.as_bytes(), "s3cret");
        let b = encrypt(text.as_bytes(), "s3cret");
        assert_ne!(a, b, "a fresh salt and IV each time");
        assert!(looks_encrypted(&a));
        assert!(!looks_encrypted(text));
        assert_eq!(decrypt_text(&a, "s3cret").unwrap(), text);
        // Line breaks (as an editor or base64 -w 76 leaves them) are ignored.
        let wrapped: String = a
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(decrypt_text(&wrapped, "s3cret").unwrap(), text);
    }

    #[test]
    fn layout_is_salt_iv_ciphertext() {
        let out = encrypt_with(b"hello", "pw", [1; 16], [2; 16]);
        let raw = STANDARD.decode(out).unwrap();
        assert_eq!(raw.len(), 16 + 16 + 16);
        assert_eq!(&raw[..16], &[1; 16]);
        assert_eq!(&raw[16..32], &[2; 16]);
    }

    #[test]
    fn wrong_password_and_garbage() {
        let enc = encrypt(
            "levelops:\n  tenant: acme\n  api_key: k\n".as_bytes(),
            "right",
        );
        assert_eq!(decrypt_text(&enc, "wrong"), Err(CryptoError::WrongPassword));
        assert!(matches!(
            decrypt("not base64!", "pw"),
            Err(CryptoError::NotBase64(_))
        ));
        assert!(matches!(
            decrypt("aGVsbG8=", "pw"),
            Err(CryptoError::TooShort(5))
        ));
    }
}
