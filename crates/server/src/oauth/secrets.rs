//! Secrets by kind.
//!
//! - **Generated secrets** (client secrets, enrolment secrets, device credentials) are
//!   256 random bits: no dictionary covers them, so a slow hash buys nothing. They are
//!   stored as SHA-256 and checked in constant time, in microseconds. Client secrets
//!   carry the form in the stored string (`sha256:<hex>`); hashes of earlier versions
//!   (`$argon2id$...`) are still accepted and re-stored in the fast form at their first
//!   successful use.
//! - **Human passwords** are hashed with Argon2id (see `password_pool`), the only kind a
//!   database leak could expose to guessing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of randomness in a generated secret (256 bits).
const SECRET_BYTES: usize = 32;

/// The prefix of a generated secret's stored form.
const FAST_PREFIX: &str = "sha256:";

/// A fresh secret: 256 random bits from the OS, URL-safe base64 without padding
/// (43 characters), so it can go into a form body, a URL or a shell unquoted.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hex SHA-256 of `value`: the stored form of device credentials and
/// enrolment secrets (looked up by it).
pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// The stored form of a generated client secret: `sha256:<hex>`.
pub fn hash_generated_secret(secret: &str) -> String {
    format!("{FAST_PREFIX}{}", sha256_hex(secret))
}

/// How a stored client-secret hash is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredSecret<'a> {
    /// `sha256:<hex>`: checked here.
    Fast(&'a str),
    /// An Argon2 PHC string of an earlier version: checked on the password pool, then
    /// re-stored in the fast form.
    Legacy(&'a str),
    /// Not a form this version knows: nothing matches it.
    Unknown,
}

impl<'a> StoredSecret<'a> {
    pub fn of(stored: &'a str) -> Self {
        if let Some(hex) = stored.strip_prefix(FAST_PREFIX) {
            StoredSecret::Fast(hex)
        } else if stored.starts_with("$argon2") {
            StoredSecret::Legacy(stored)
        } else {
            StoredSecret::Unknown
        }
    }
}

/// Whether `secret` hashes to `stored_hex`, in constant time. An unknown client is
/// checked against a hash nothing matches, so it costs the same.
pub fn verify_generated_secret(secret: &str, stored_hex: Option<&str>) -> bool {
    const NOTHING: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let presented = sha256_hex(secret);
    let stored = stored_hex.unwrap_or(NOTHING);
    let equal: bool = presented.as_bytes().ct_eq(stored.as_bytes()).into();
    equal && stored_hex.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_256_bit_url_safe_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in unpadded base64");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn generated_secrets_verify_only_with_the_same_secret() {
        let secret = generate_secret();
        let stored = hash_generated_secret(&secret);
        assert!(stored.starts_with("sha256:"));
        assert!(!stored.contains(&secret));
        let StoredSecret::Fast(hex) = StoredSecret::of(&stored) else {
            panic!("{stored}")
        };
        assert!(verify_generated_secret(&secret, Some(hex)));
        assert!(!verify_generated_secret(&generate_secret(), Some(hex)));
        assert!(!verify_generated_secret("", Some(hex)));
        assert!(!verify_generated_secret(&secret, None));
    }

    #[test]
    fn stored_forms_are_told_apart() {
        assert_eq!(
            StoredSecret::of("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
            StoredSecret::Legacy("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA")
        );
        assert_eq!(StoredSecret::of("sha256:ab"), StoredSecret::Fast("ab"));
        assert_eq!(StoredSecret::of("md5:ab"), StoredSecret::Unknown);
        assert_eq!(StoredSecret::of(""), StoredSecret::Unknown);
    }

    #[test]
    fn sha256_hex_is_the_known_digest() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
