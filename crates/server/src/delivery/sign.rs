//! Signing a delivery: Standard Webhooks headers on every request, and `X-JobServ-Sig` for the
//! JobServ format. During a secret's rotation grace `webhook-signature` carries a signature made
//! with each value, space-separated (current first), as the Standard Webhooks specification
//! allows, so receivers on either value accept it. `X-JobServ-Sig` always carries exactly one
//! `sha256:<hex>` made with the current value: JobServ receivers compare the whole header after
//! its `sha256:` prefix with one HMAC, so a second value would make every one of them refuse it.

use cistern_core::signatures::{hmac_sha256, standard_key, standard_sign};

/// The secret values that sign: the current one, and the previous one during its grace.
#[derive(Clone)]
pub struct SigningKeys {
    /// Current value.
    pub current: Vec<u8>,
    /// Previous value, while it is still valid.
    pub previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKeys(…)")
    }
}

impl SigningKeys {
    fn values(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.current.as_slice()).chain(self.previous.as_deref())
    }
}

/// The HMAC key of a Standard Webhooks signature for a secret value: a `whsec_<base64>` secret
/// signs with its decoded bytes (as Standard Webhooks libraries expect); any other value signs
/// with its bytes as they are.
pub fn standard_key_of(value: &[u8]) -> Vec<u8> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| s.trim().starts_with("whsec_"))
        .and_then(standard_key)
        .unwrap_or_else(|| value.to_vec())
}

/// `webhook-signature`: `v1,<base64>` per value, space-separated.
pub fn webhook_signature(keys: &SigningKeys, id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.values()
        .map(|v| standard_sign(&standard_key_of(v), id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `X-JobServ-Sig`: one `sha256:<hex HMAC-SHA256 of the body>`, signed with the current value
/// (also during a rotation's grace, see the module comment).
pub fn jobserv_signature(keys: &SigningKeys, body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(hmac_sha256(&keys.current, body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cistern_core::signatures::{standard_verify, verify_hex};

    #[test]
    fn both_values_sign_during_the_grace() {
        let keys = SigningKeys {
            current: b"new".to_vec(),
            previous: Some(b"old".to_vec()),
        };
        let body = br#"{"a":1}"#;
        let sig = webhook_signature(&keys, "msg_1", 1_700_000_000, body);
        assert_eq!(sig.split(' ').count(), 2);
        for k in [&b"new"[..], b"old"] {
            assert_eq!(
                standard_verify(k, "msg_1", "1700000000", &sig, body, 1_700_000_000, 300),
                Ok(())
            );
        }
        // JobServ: one value, the current secret's, even during the grace.
        let js = jobserv_signature(&keys, body);
        assert!(!js.contains(' '));
        assert!(verify_hex(
            b"new",
            body,
            js.strip_prefix("sha256:").unwrap()
        ));
        let one = SigningKeys {
            current: b"new".to_vec(),
            previous: None,
        };
        assert!(!jobserv_signature(&one, body).contains(' '));
    }

    #[test]
    fn whsec_secrets_sign_with_their_decoded_key() {
        // The Standard Webhooks specification's example.
        let keys = SigningKeys {
            current: b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec(),
            previous: None,
        };
        assert_eq!(
            webhook_signature(
                &keys,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
