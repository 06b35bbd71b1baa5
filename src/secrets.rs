//! Secrets recur must keep and use again (a merchant's gateway signing secret),
//! encrypted at rest with `RECUR_SECRET_KEY` (docs/gateway-protocol.md#per-merchant-gateways).
//!
//! ChaCha20-Poly1305 (RFC 8439) with a random 96-bit nonce per write, stored in front
//! of the ciphertext: `version (1) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The owner's
//! id is the associated data, so a ciphertext copied to another merchant's row does not
//! open there.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use uuid::Uuid;

use crate::config::Secret;

/// The layout of a sealed secret; a new layout (or key) would get a new number.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// The key of `RECUR_SECRET_KEY`. `Debug` never prints it.
#[derive(Clone)]
pub struct SecretKey {
    cipher: ChaCha20Poly1305,
}

/// `RECUR_SECRET_KEY` is not a key. The text never quotes the value.
#[derive(Debug, thiserror::Error)]
#[error("RECUR_SECRET_KEY must be 64 hexadecimal characters (32 bytes), e.g. from `openssl rand -hex 32`")]
pub struct KeyFormatError;

/// A sealed secret that does not open: another key, another owner, or altered bytes.
#[derive(Debug, thiserror::Error)]
#[error(
    "the stored secret cannot be decrypted: RECUR_SECRET_KEY is not the key it was stored with, or the row was altered"
)]
pub struct OpenError;

impl SecretKey {
    /// Parse 64 hex characters (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<SecretKey, KeyFormatError> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or(KeyFormatError)?;
        Ok(SecretKey { cipher: ChaCha20Poly1305::new(&Key::from(bytes)) })
    }

    /// Encrypt `plaintext` for `owner`.
    pub fn seal(&self, owner: Uuid, plaintext: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(owner);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: &aad })
            .expect("ChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypt what [`SecretKey::seal`] wrote for `owner`.
    pub fn open(&self, owner: Uuid, sealed: &[u8]) -> Result<Secret, OpenError> {
        let (&version, rest) = sealed.split_first().ok_or(OpenError)?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| OpenError)?;
        let aad = associated_data(owner);
        let plain = self.cipher.decrypt(&nonce, Payload { msg: ciphertext, aad: &aad }).map_err(|_| OpenError)?;
        String::from_utf8(plain).map(Secret::from).map_err(|_| OpenError)
    }
}

/// The layout version and the owner: a ciphertext opens only as what it was sealed for.
fn associated_data(owner: Uuid) -> [u8; 17] {
    let mut aad = [0u8; 17];
    aad[0] = VERSION;
    aad[1..].copy_from_slice(owner.as_bytes());
    aad
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const OTHER: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_secret_opens_with_its_key_for_its_owner() {
        let key = SecretKey::parse(KEY).unwrap();
        let owner = Uuid::now_v7();
        let sealed = key.seal(owner, "whsec_c2VjcmV0");
        assert_eq!(key.open(owner, &sealed).unwrap().expose(), "whsec_c2VjcmV0");
        assert!(!sealed.windows(6).any(|w| w == b"whsec_"), "the plaintext is not in the ciphertext");
        // A fresh nonce per write: the same secret never seals to the same bytes.
        assert_ne!(key.seal(owner, "whsec_c2VjcmV0"), sealed);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + "whsec_c2VjcmV0".len() + 16);
    }

    #[test]
    fn another_key_another_owner_or_altered_bytes_do_not_open() {
        let key = SecretKey::parse(KEY).unwrap();
        let owner = Uuid::now_v7();
        let sealed = key.seal(owner, "whsec_c2VjcmV0");
        assert!(SecretKey::parse(OTHER).unwrap().open(owner, &sealed).is_err(), "wrong key");
        assert!(key.open(Uuid::now_v7(), &sealed).is_err(), "wrong merchant");
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(key.open(owner, &tampered).is_err(), "byte {i} flipped");
        }
        assert!(key.open(owner, &sealed[..sealed.len() - 1]).is_err(), "truncated");
        assert!(key.open(owner, &[]).is_err(), "empty");
    }

    #[test]
    fn keys_are_64_hex_characters_and_never_printed() {
        assert!(SecretKey::parse(&format!("  {KEY}\n")).is_ok());
        assert!(SecretKey::parse(&KEY.to_uppercase()).is_ok());
        for bad in [
            "",
            &KEY[..62],
            &format!("{KEY}00"),
            &KEY.replace('0', "g"),
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ] {
            let e = SecretKey::parse(bad).unwrap_err();
            assert!(!e.to_string().contains(bad) || bad.is_empty(), "{e}");
        }
        let key = SecretKey::parse(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "SecretKey([redacted])");
    }
}
