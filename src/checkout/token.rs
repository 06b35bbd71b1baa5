//! Page tokens (docs/pages.md#tokens): 256 random bits handed out once, in the URL;
//! only their SHA-256 is stored, so a copy of the database opens no page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new token and the hash to store.
pub fn new_token() -> (String, Vec<u8>) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = hash(&token);
    (token, hash)
}

/// The stored form of a token. Anything that is not the shape of a token hashes to
/// nothing stored, so it is simply not found.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether `s` has the shape of a token (43 URL-safe base64 characters): anything
/// else is not looked up at all.
pub fn well_formed(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 32 random bytes, for keys that are never shown (CSRF keys).
pub fn random_key() -> Vec<u8> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    raw.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_and_stored_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_eq!(ha, hash(&a));
        assert_ne!(ha, a.as_bytes());
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}=", &a[..42])));
    }
}
