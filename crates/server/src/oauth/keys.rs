//! Signing keys of the built-in authorization server: Ed25519 (`EdDSA`), kept sealed
//! in the store (see `crate::at_rest`) so that tokens stay valid across restarts and
//! replicas, and published as a JWKS for anyone who wants to verify our tokens.
//!
//! [`KeyMaterial`] is one snapshot of the stored keys with their private parts opened;
//! which key signs and which verify is decided at the time of use
//! (`appfence_core::signing_keys`), so a key published ahead of its activation starts
//! signing on time without a refresh. `keyring` keeps the snapshot current.

use std::collections::HashMap;

use appfence_core::records::SigningKey;
use appfence_core::signing_keys::signer_at;
use appfence_core::Error;
use appfence_proto::Timestamp;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::at_rest::kek::UnsealError;
use crate::at_rest::KeyEncryptionKey;

/// The one algorithm of the built-in issuer, as written in JWT headers and the store.
pub const ALGORITHM: &str = "EdDSA";

/// PKCS#8 v1 DER of an Ed25519 private key is this fixed prefix followed by the 32-byte
/// seed (RFC 8410 §7): SEQUENCE { version 0, AlgorithmIdentifier { id-Ed25519 },
/// OCTET STRING { OCTET STRING seed } }. jsonwebtoken's `EncodingKey::from_ed_der`
/// expects exactly this.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The stored keys with what signs and verifies: private parts opened, in memory only.
pub struct KeyMaterial {
    records: Vec<SigningKey>,
    encoding: HashMap<String, EncodingKey>,
    decoding: HashMap<String, (DecodingKey, [u8; 32])>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field(
                "kids",
                &self.records.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A JSON Web Key Set (RFC 7517 §5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// An Ed25519 public key as a JWK (RFC 8037 §2), in the field order Entra publishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
}

impl KeyMaterial {
    /// Opens the stored keys with `kek`. A key sealed with another key-encryption key,
    /// or whose bytes do not open or do not match its public key, is an error naming
    /// the key: never a key that silently stops signing or verifying.
    pub fn open(records: Vec<SigningKey>, kek: &KeyEncryptionKey) -> Result<KeyMaterial, Error> {
        let mut encoding = HashMap::new();
        let mut decoding = HashMap::new();
        for key in records.iter().filter(|k| k.algorithm == ALGORITHM) {
            let public = public_key_of(key)?;
            if key.retired.is_some() {
                continue;
            }
            decoding.insert(key.kid.clone(), (DecodingKey::from_ed_der(&public), public));
            let Some(sealed) = &key.sealed_private_key else {
                continue;
            };
            let seed = unseal_seed(key, sealed, kek)?;
            let derived = ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .to_bytes();
            if derived != public {
                return Err(corrupt(
                    key,
                    "the private key does not match the public key",
                ));
            }
            let mut der = Zeroizing::new(Vec::with_capacity(PKCS8_ED25519_PREFIX.len() + 32));
            der.extend_from_slice(&PKCS8_ED25519_PREFIX);
            der.extend_from_slice(seed.as_slice());
            encoding.insert(key.kid.clone(), EncodingKey::from_ed_der(&der));
        }
        Ok(KeyMaterial {
            records,
            encoding,
            decoding,
        })
    }

    /// The stored keys this snapshot was made from, newest first.
    pub fn records(&self) -> &[SigningKey] {
        &self.records
    }

    /// The key that signs at `now`, with its `kid`.
    pub fn signer(&self, now: Timestamp) -> Option<(&str, &EncodingKey)> {
        let key = signer_at(&self.records, now)?;
        let encoding = self.encoding.get(&key.kid)?;
        Some((key.kid.as_str(), encoding))
    }

    /// The verification key with this `kid`, if it is one of ours and verifies at `now`.
    pub fn decoding_key(&self, kid: &str, now: Timestamp) -> Option<&DecodingKey> {
        let record = self.records.iter().find(|k| k.kid == kid)?;
        if !record.verifies_at(now) {
            return None;
        }
        self.decoding.get(kid).map(|(key, _)| key)
    }

    /// Whether `kid` names a stored key at all (retired or not).
    pub fn knows(&self, kid: &str) -> bool {
        self.records.iter().any(|k| k.kid == kid)
    }

    /// Exactly the keys that verify at `now`, newest first.
    pub fn jwks(&self, now: Timestamp) -> Jwks {
        let keys = self
            .records
            .iter()
            .filter(|k| k.verifies_at(now))
            .filter_map(|k| {
                let (_, public) = self.decoding.get(&k.kid)?;
                Some(Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: URL_SAFE_NO_PAD.encode(public),
                    kid: k.kid.clone(),
                    use_: "sig".into(),
                    alg: ALGORITHM.into(),
                })
            })
            .collect();
        Jwks { keys }
    }
}

fn corrupt(key: &SigningKey, what: &str) -> Error {
    Error::internal(format!("signing key {} is corrupt: {what}", key.kid))
}

/// The AEAD context of a signing key: its kid, so a sealed key cannot be moved to
/// another row.
fn seal_context(kid: &str) -> Vec<u8> {
    format!("appfence signing key {kid}").into_bytes()
}

fn unseal_seed(
    key: &SigningKey,
    sealed: &[u8],
    kek: &KeyEncryptionKey,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    if key.kek_id.as_deref() != Some(kek.id()) {
        return Err(Error::internal(format!(
            "signing key {} is sealed with the key-encryption key {}, but the key file {} holds              {}: start with the key file this database was sealed with",
            key.kid,
            key.kek_id.as_deref().unwrap_or("(none)"),
            kek.path().display(),
            kek.id()
        )));
    }
    let opened = kek
        .unseal(&seal_context(&key.kid), sealed)
        .map_err(|e| match e {
            UnsealError::Malformed => corrupt(key, "its sealed form is malformed"),
            UnsealError::Rejected => corrupt(
                key,
                "its sealed form does not open with the key file (changed after sealing?)",
            ),
        })?;
    let seed: [u8; 32] = opened
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(key, "the private key is not 32 bytes"))?;
    Ok(Zeroizing::new(seed))
}

fn public_key_of(key: &SigningKey) -> Result<[u8; 32], Error> {
    key.public_key
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(key, "the public key is not 32 bytes"))
}

/// Seals a plain Ed25519 seed of key `kid` with `kek`.
pub fn seal_seed(kid: &str, seed: &[u8], kek: &KeyEncryptionKey) -> Vec<u8> {
    kek.seal(&seal_context(kid), seed)
}

/// A new random Ed25519 key, sealed with `kek`, created at `now`, signing from
/// `activates`.
pub fn generate_signing_key(
    kek: &KeyEncryptionKey,
    now: Timestamp,
    activates: Timestamp,
) -> SigningKey {
    let mut seed = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(seed.as_mut());
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let kid = kid_of(&public);
    SigningKey {
        sealed_private_key: Some(seal_seed(&kid, seed.as_slice(), kek)),
        kek_id: Some(kek.id().to_string()),
        kid,
        algorithm: ALGORITHM.into(),
        public_key: public.to_vec(),
        created: now,
        activates,
        verify_until: None,
        retired: None,
    }
}

/// The key id: the first 16 hex characters of the SHA-256 of the public key, so it is
/// stable for a key and different between keys.
pub fn kid_of(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

#[cfg(test)]
impl KeyMaterial {
    /// One fresh key, signing since the epoch (tests).
    pub fn for_tests() -> KeyMaterial {
        Self::for_tests_named(None)
    }

    /// One fresh key named `kid` if given: an impostor of another key (tests).
    pub fn for_tests_named(kid: Option<&str>) -> KeyMaterial {
        let kek = KeyEncryptionKey::ephemeral();
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let kid = kid.map_or_else(|| kid_of(&public), str::to_string);
        let epoch = Timestamp::from_unix_seconds(0);
        let key = SigningKey {
            sealed_private_key: Some(seal_seed(&kid, &seed, &kek)),
            kek_id: Some(kek.id().to_string()),
            kid,
            algorithm: ALGORITHM.into(),
            public_key: public.to_vec(),
            created: epoch,
            activates: epoch,
            verify_until: None,
            retired: None,
        };
        KeyMaterial::open(vec![key], &kek).expect("a fresh key opens")
    }

    /// The one key of [`for_tests`](Self::for_tests).
    pub fn signing_kid(&self) -> &str {
        &self.records[0].kid
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding[&self.records[0].kid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, Header, Validation};
    use std::collections::HashSet;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_700_000_000 + seconds)
    }

    fn sign(signer: &KeyMaterial, now: Timestamp) -> (String, String) {
        let (kid, key) = signer.signer(now).expect("a key signs");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        let claims = Claims {
            sub: "s".into(),
            exp: 4_000_000_000,
        };
        (
            kid.to_string(),
            jsonwebtoken::encode(&header, &claims, key).unwrap(),
        )
    }

    fn verify(
        verifier: &KeyMaterial,
        kid: &str,
        token: &str,
        now: Timestamp,
    ) -> jsonwebtoken::errors::Result<Claims> {
        let key = verifier
            .decoding_key(kid, now)
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        jsonwebtoken::decode::<Claims>(token, key, &validation).map(|d| d.claims)
    }

    #[test]
    fn generated_keys_are_sealed_and_sign_once_opened() {
        let kek = KeyEncryptionKey::ephemeral();
        let key = generate_signing_key(&kek, t(0), t(0));
        assert_eq!(key.public_key.len(), 32);
        assert_eq!(key.kid, kid_of(&key.public_key));
        assert_eq!(key.kek_id.as_deref(), Some(kek.id()));
        let material = KeyMaterial::open(vec![key], &kek).unwrap();
        let (kid, token) = sign(&material, t(1));
        assert_eq!(verify(&material, &kid, &token, t(1)).unwrap().sub, "s");
    }

    #[test]
    fn the_wrong_key_file_is_named_not_silently_ignored() {
        let kek = KeyEncryptionKey::ephemeral();
        let key = generate_signing_key(&kek, t(0), t(0));
        let other = KeyEncryptionKey::ephemeral();
        let err = KeyMaterial::open(vec![key.clone()], &other).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(kek.id()) && text.contains(other.id()),
            "{text}"
        );
        // Same id, changed bytes: damaged.
        let mut tampered = key.clone();
        tampered.sealed_private_key.as_mut().unwrap()[30] ^= 1;
        let err = KeyMaterial::open(vec![tampered], &kek).unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
        // A sealed key moved under another kid does not open either.
        let second = generate_signing_key(&kek, t(0), t(0));
        let moved = SigningKey {
            sealed_private_key: key.sealed_private_key.clone(),
            ..second
        };
        assert!(KeyMaterial::open(vec![moved], &kek).is_err());
        let mismatched = SigningKey {
            public_key: generate_signing_key(&kek, t(0), t(0)).public_key,
            ..key
        };
        assert!(KeyMaterial::open(vec![mismatched], &kek).is_err());
    }

    #[test]
    fn a_rotation_signs_with_the_new_key_and_still_verifies_the_old() {
        let kek = KeyEncryptionKey::ephemeral();
        let mut old = generate_signing_key(&kek, t(0), t(0));
        let before = KeyMaterial::open(vec![old.clone()], &kek).unwrap();
        let (old_kid, old_token) = sign(&before, t(5));
        old.verify_until = Some(t(100));
        let new = generate_signing_key(&kek, t(10), t(20));
        let after = KeyMaterial::open(vec![new.clone(), old.clone()], &kek).unwrap();
        assert_eq!(after.signer(t(19)).unwrap().0, old.kid, "not active yet");
        assert_eq!(after.signer(t(20)).unwrap().0, new.kid);
        assert!(verify(&after, &old_kid, &old_token, t(99)).is_ok());
        assert!(
            verify(&after, &old_kid, &old_token, t(100)).is_err(),
            "expired key"
        );
        let kids = |n| {
            after
                .jwks(t(n))
                .keys
                .into_iter()
                .map(|k| k.kid)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kids(15),
            [new.kid.clone(), old.kid.clone()],
            "published ahead"
        );
        assert_eq!(kids(100), [new.kid.clone()], "exactly the keys that verify");
    }

    #[test]
    fn retired_keys_verify_nothing_and_are_not_published() {
        let kek = KeyEncryptionKey::ephemeral();
        let key = generate_signing_key(&kek, t(0), t(0));
        let material = KeyMaterial::open(vec![key.clone()], &kek).unwrap();
        let (kid, token) = sign(&material, t(1));
        let retired = SigningKey {
            retired: Some(t(2)),
            sealed_private_key: None,
            verify_until: Some(t(2)),
            ..key
        };
        let after = KeyMaterial::open(vec![retired], &kek).unwrap();
        assert!(verify(&after, &kid, &token, t(3)).is_err());
        assert!(after.signer(t(3)).is_none());
        assert!(after.jwks(t(3)).keys.is_empty());
        assert!(after.knows(&kid));
    }

    #[test]
    fn jwks_has_the_rfc_8037_shape() {
        let kek = KeyEncryptionKey::ephemeral();
        let key = generate_signing_key(&kek, t(0), t(0));
        let material = KeyMaterial::open(vec![key.clone()], &kek).unwrap();
        let json = serde_json::to_string(&material.jwks(t(1))).unwrap();
        let x = URL_SAFE_NO_PAD.encode(&key.public_key);
        assert_eq!(
            json,
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"{}","use":"sig","alg":"EdDSA"}}]}}"#,
                key.kid
            )
        );
        let from_x = DecodingKey::from_ed_components(&x).unwrap();
        let (_, token) = sign(&material, t(1));
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_aud = false;
        assert!(jsonwebtoken::decode::<Claims>(&token, &from_x, &validation).is_ok());
    }
}
