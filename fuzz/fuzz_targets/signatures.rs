//! Signature checks on arbitrary headers: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature` lists, `whsec_` secrets), hex HMACs (JobServ, GitHub) and token equality.
//! The input is split at newlines into secret, id, timestamp, signatures, body. Whatever the
//! headers, a signature made with the secret verifies and one made without it does not.
#![no_main]
use cistern_core::signatures::{
    constant_time_eq, hmac_sha256, standard_key, standard_sign, standard_verify, verify_hex,
};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_717_200_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let secret = parts.next().unwrap_or("");
    let id = parts.next().unwrap_or("");
    let ts = parts.next().unwrap_or("");
    let sigs = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("").as_bytes();

    // Arbitrary headers never panic, and only a real signature passes.
    let key = standard_key(secret).unwrap_or_else(|| secret.as_bytes().to_vec());
    let _ = standard_verify(&key, id, ts, sigs, body, NOW, 300);
    let _ = verify_hex(secret.as_bytes(), body, sigs);
    let _ = constant_time_eq(secret.as_bytes(), sigs.as_bytes());

    // A signature made with the key verifies, among any others; a flipped one does not.
    let good = standard_sign(&key, id, NOW, body);
    let list = format!("{sigs} {good}");
    assert!(standard_verify(&key, id, &NOW.to_string(), &list, body, NOW, 300).is_ok());
    let mac = hmac_sha256(secret.as_bytes(), body);
    assert!(verify_hex(secret.as_bytes(), body, &hex_of(&mac)));
    let mut bad = mac;
    bad[0] ^= 1;
    assert!(!verify_hex(secret.as_bytes(), body, &hex_of(&bad)));
    assert!(constant_time_eq(secret.as_bytes(), secret.as_bytes()));
});

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
