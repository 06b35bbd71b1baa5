//! Standard Webhooks 1.0 signatures (docs/webhooks.md#verifying-a-message): HMAC-SHA256
//! of `"{id}.{timestamp}.{body}"` under the secret's decoded bytes, sent as
//! `v1,<base64>`; several space-separated while a rotated-out secret is still valid.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The prefix of every secret.
pub const PREFIX: &str = "whsec_";

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The HMAC key of a secret (its base64 part, decoded).
fn key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(PREFIX).unwrap_or(secret)).ok()
}

/// One `v1,<signature>` of a message under one secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)?).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn header<'a>(secrets: impl IntoIterator<Item = &'a str>, id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.into_iter().filter_map(|s| sign(s, id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_32_random_bytes_behind_the_prefix() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(key(&a).unwrap().len(), 32);
        assert!(a.starts_with(PREFIX));
    }

    #[test]
    fn rotation_sends_one_signature_per_secret() {
        let (a, b) = (new_secret(), new_secret());
        let h = header([a.as_str(), b.as_str()], "msg_1", 1_700_000_000, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&a, "msg_1", 1_700_000_000, b"{}").unwrap());
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(sign(&a, "msg_1", 1_700_000_001, b"{}"), sign(&a, "msg_1", 1_700_000_000, b"{}"));
    }
}
