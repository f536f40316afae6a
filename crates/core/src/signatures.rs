//! Webhook signatures: HMAC-SHA256 over the raw body (JobServ `X-JobServ-Sig: sha256:<hex>`,
//! GitHub `X-Hub-Signature-256: sha256=<hex>`) and Standard Webhooks (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64>` over `id.timestamp.body`). Every
//! comparison is constant-time (`Mac::verify_slice`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Checks a hex HMAC-SHA256 of `body` in constant time. Hex is accepted in either case.
pub fn verify_hex(key: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Why a Standard Webhooks message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandardError {
    /// The secret is not `whsec_<base64>` (or plain base64).
    BadSecret,
    /// `webhook-timestamp` is not an integer.
    BadTimestamp,
    /// The timestamp is further from now than the tolerance.
    OutOfWindow {
        /// Seconds between the timestamp and now.
        skew: i64,
    },
    /// No `v1,<base64>` signature matched.
    NoMatch,
}

/// The key bytes of a Standard Webhooks secret (`whsec_<base64>`, or bare base64).
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret
        .trim()
        .strip_prefix("whsec_")
        .unwrap_or(secret.trim());
    STANDARD.decode(b64).ok()
}

/// The `v1,<base64>` signature of a message.
pub fn standard_sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Verifies a Standard Webhooks message: the timestamp within `tolerance_s` of `now_s`, and any one
/// of the space-separated `v1,<base64>` signatures matching.
pub fn standard_verify(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), StandardError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| StandardError::BadTimestamp)?;
    // `abs_diff`: a timestamp near i64::MIN or MAX must not overflow the subtraction.
    let skew = now_s.abs_diff(ts);
    if skew > tolerance_s.unsigned_abs() {
        return Err(StandardError::OutOfWindow {
            skew: i64::try_from(skew).unwrap_or(i64::MAX),
        });
    }
    for sig in signatures.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        let Ok(bytes) = STANDARD.decode(b64) else {
            continue;
        };
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        if mac.verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(StandardError::NoMatch)
}

/// Constant-time equality of two secrets (GitLab's `X-Gitlab-Token`).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare MACs of both under a fixed key: equal length outputs, constant-time verify.
    let tag = hmac_sha256(b"cistern-compare", a);
    let mut mac =
        HmacSha256::new_from_slice(b"cistern-compare").expect("HMAC takes keys of any length");
    mac.update(b);
    mac.verify_slice(&tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_documented_vector() {
        // docs.github.com "Validating webhook deliveries": secret and payload from the docs.
        let sig = hex::encode(hmac_sha256(b"It's a Secret to Everybody", b"Hello, World!"));
        assert_eq!(
            sig,
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(verify_hex(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            &sig
        ));
        assert!(!verify_hex(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            &sig
        ));
        assert!(!verify_hex(b"wrong", b"Hello, World!", &sig));
        assert!(!verify_hex(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            "zz"
        ));
    }

    #[test]
    fn standard_webhooks_spec_vector() {
        // The Standard Webhooks specification's example.
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = standard_sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let now = 1614265330;
        assert_eq!(
            standard_verify(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &format!("v1,bogus {sig}"),
                body,
                now,
                300
            ),
            Ok(())
        );
        assert_eq!(
            standard_verify(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &sig,
                body,
                now + 301,
                300
            ),
            Err(StandardError::OutOfWindow { skew: 301 })
        );
        assert_eq!(
            standard_verify(&key, "msg_other", "1614265330", &sig, body, now, 300),
            Err(StandardError::NoMatch)
        );
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
