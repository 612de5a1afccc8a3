//! Client secrets and device credentials: generation and hashing.
//!
//! Client secrets are checked with a slow hash (Argon2id) because the stored hash is
//! what leaks if the database does. Device credentials and enrolment secrets are 256-bit
//! random values, which no dictionary covers, so a plain SHA-256 is enough for them and
//! keeps the device hot path cheap.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Bytes of randomness in a generated secret (256 bits).
const SECRET_BYTES: usize = 32;

/// A fresh secret: 256 random bits from the OS, URL-safe base64 without padding
/// (43 characters), so it can go into a form body, a URL or a shell unquoted.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The Argon2id PHC string (`$argon2id$v=19$m=...`) of `secret`, with a random salt and
/// the crate's default parameters.
pub fn hash_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("default Argon2 parameters accept any secret")
        .to_string()
}

/// Whether `secret` matches the PHC string `phc`. The comparison of the derived hash is
/// constant-time (done by the `password-hash` verifier); a malformed `phc` never matches.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(secret.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// Lower-case hex SHA-256 of `value`: the stored form of high-entropy device credentials
/// and enrolment secrets.
pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
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
    fn hashed_secrets_verify_only_with_the_same_secret() {
        let secret = generate_secret();
        let phc = hash_secret(&secret);
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains(&secret));
        assert!(verify_secret(&secret, &phc));
        assert!(!verify_secret(&generate_secret(), &phc));
        assert!(!verify_secret("", &phc));
        // Salted: the same secret hashes differently each time, and both verify.
        let again = hash_secret(&secret);
        assert_ne!(phc, again);
        assert!(verify_secret(&secret, &again));
    }

    #[test]
    fn malformed_hashes_never_match() {
        assert!(!verify_secret("x", ""));
        assert!(!verify_secret("x", "not a phc string"));
        assert!(!verify_secret("x", &sha256_hex("x")));
    }

    #[test]
    fn sha256_hex_is_the_known_digest() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
