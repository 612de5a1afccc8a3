//! Signing keys of the built-in authorization server: Ed25519 (`EdDSA`), kept in the
//! store so that tokens issued before a restart stay valid after it, and published as
//! a JWKS for anyone who wants to verify our tokens themselves.

use std::collections::HashMap;

use appfence_core::records::SigningKey;
use appfence_core::{Clock, Error};
use appfence_proto::Timestamp;
use appfence_store::Store;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tenants::TenantCache;

/// The one algorithm of the built-in issuer, as written in JWT headers and the store.
pub const ALGORITHM: &str = "EdDSA";

/// PKCS#8 v1 DER of an Ed25519 private key is this fixed prefix followed by the 32-byte
/// seed (RFC 8410 §7): SEQUENCE { version 0, AlgorithmIdentifier { id-Ed25519 },
/// OCTET STRING { OCTET STRING seed } }. jsonwebtoken's `EncodingKey::from_ed_der`
/// expects exactly this.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// What the built-in issuer needs on the hot path: the key it signs with, every key it
/// accepts signatures from (older keys stay valid after a rotation), the JWKS, and the
/// cache of known tenant ids consulted for every verified token.
pub struct KeySet {
    signing_kid: String,
    encoding: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: Jwks,
    tenants: TenantCache,
    verified: super::token_cache::TokenCache,
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

impl KeySet {
    /// Loads the Ed25519 keys from the store, or generates and persists one if there is
    /// none. The newest key signs; all of them verify.
    pub async fn load_or_create(store: &dyn Store, clock: &dyn Clock) -> Result<KeySet, Error> {
        let mut keys: Vec<SigningKey> = store
            .signing_keys()
            .await?
            .into_iter()
            .filter(|k| k.algorithm == ALGORITHM)
            .collect();
        if keys.is_empty() {
            let key = generate_signing_key(clock.now());
            store.insert_signing_key(&key).await?;
            tracing::info!(kid = %key.kid, "generated a new token signing key");
            keys.push(key);
        }
        KeySet::from_keys(&keys)
    }

    /// Builds the set from stored keys (any order; the newest by `created` signs).
    /// A key whose bytes are damaged is an `Internal` error rather than a key that
    /// silently never verifies.
    pub fn from_keys(keys: &[SigningKey]) -> Result<KeySet, Error> {
        let mut sorted: Vec<&SigningKey> =
            keys.iter().filter(|k| k.algorithm == ALGORITHM).collect();
        sorted.sort_by_key(|k| std::cmp::Reverse(k.created));
        let newest = *sorted
            .first()
            .ok_or_else(|| Error::internal("no EdDSA signing key is available"))?;
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        for &key in &sorted {
            let public = checked_public_key(key)?;
            verifying.insert(key.kid.clone(), DecodingKey::from_ed_der(&public));
            jwks.push(Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(public),
                kid: key.kid.clone(),
                use_: "sig".into(),
                alg: ALGORITHM.into(),
            });
        }
        let mut der = Vec::with_capacity(PKCS8_ED25519_PREFIX.len() + 32);
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(&newest.private_key);
        Ok(KeySet {
            signing_kid: newest.kid.clone(),
            encoding: EncodingKey::from_ed_der(&der),
            verifying,
            jwks: Jwks { keys: jwks },
            tenants: TenantCache::default(),
            verified: Default::default(),
        })
    }

    /// The `kid` of the key that signs new tokens.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The verification key with this `kid`, if it is one of ours.
    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifying.get(kid)
    }

    /// The public keys, newest first.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// Tenant ids known to exist, so token verification rarely needs the store.
    /// Tokens already verified with these keys.
    pub fn verified_tokens(&self) -> &super::token_cache::TokenCache {
        &self.verified
    }

    pub fn tenants(&self) -> &TenantCache {
        &self.tenants
    }
}

/// A new random Ed25519 key, created at `now`.
pub fn generate_signing_key(now: Timestamp) -> SigningKey {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    SigningKey {
        kid: kid_of(&public),
        algorithm: ALGORITHM.into(),
        private_key: seed.to_vec(),
        public_key: public.to_vec(),
        created: now,
    }
}

/// The key id: the first 16 hex characters of the SHA-256 of the public key, so it is
/// stable for a key and different between keys.
pub fn kid_of(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// The public key of a stored key, after checking that it belongs to the private key.
fn checked_public_key(key: &SigningKey) -> Result<[u8; 32], Error> {
    let corrupt =
        |what: &str| Error::internal(format!("signing key {} is corrupt: {what}", key.kid));
    let seed: [u8; 32] = key
        .private_key
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("the private key is not 32 bytes"))?;
    let derived = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    if key.public_key.as_slice() != derived.as_slice() {
        return Err(corrupt("the public key does not match the private key"));
    }
    Ok(derived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::test_store::MemStore;
    use appfence_core::ManualClock;
    use jsonwebtoken::{Algorithm, Header, Validation};
    use std::collections::HashSet;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    fn round_trip(signer: &KeySet, verifier: &KeySet) -> jsonwebtoken::errors::Result<Claims> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.signing_kid().to_string());
        let claims = Claims {
            sub: "s".into(),
            exp: 4_000_000_000,
        };
        let token = jsonwebtoken::encode(&header, &claims, signer.encoding_key())?;
        let key = verifier
            .decoding_key(signer.signing_kid())
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        jsonwebtoken::decode::<Claims>(&token, key, &validation).map(|d| d.claims)
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        let key = generate_signing_key(Timestamp::from_unix_seconds(1));
        assert_eq!(key.private_key.len(), 32);
        assert_eq!(key.public_key.len(), 32);
        assert_eq!(key.kid.len(), 16);
        assert_eq!(key.kid, kid_of(&key.public_key));
        let set = KeySet::from_keys(&[key]).unwrap();
        assert_eq!(round_trip(&set, &set).unwrap().sub, "s");
    }

    #[test]
    fn decoding_from_jwk_components_matches_the_der_form() {
        let set =
            KeySet::from_keys(&[generate_signing_key(Timestamp::from_unix_seconds(1))]).unwrap();
        let jwk = &set.jwks().keys[0];
        let from_x = DecodingKey::from_ed_components(&jwk.x).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(jwk.kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &Claims {
                sub: "s".into(),
                exp: 4_000_000_000,
            },
            set.encoding_key(),
        )
        .unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_aud = false;
        assert!(jsonwebtoken::decode::<Claims>(&token, &from_x, &validation).is_ok());
    }

    #[test]
    fn another_key_does_not_verify() {
        let a =
            KeySet::from_keys(&[generate_signing_key(Timestamp::from_unix_seconds(1))]).unwrap();
        let b_key = generate_signing_key(Timestamp::from_unix_seconds(1));
        // Give b's key a's kid, so the lookup succeeds and only the signature differs.
        let b = KeySet::from_keys(&[SigningKey {
            kid: a.signing_kid().into(),
            ..b_key
        }])
        .unwrap();
        let err = round_trip(&a, &b).unwrap_err();
        assert_eq!(
            err.kind(),
            &jsonwebtoken::errors::ErrorKind::InvalidSignature
        );
    }

    #[test]
    fn the_newest_key_signs_and_all_verify() {
        let old = generate_signing_key(Timestamp::from_unix_seconds(100));
        let new = generate_signing_key(Timestamp::from_unix_seconds(200));
        let set = KeySet::from_keys(&[old.clone(), new.clone()]).unwrap();
        assert_eq!(set.signing_kid(), new.kid);
        assert!(set.decoding_key(&old.kid).is_some());
        assert_eq!(
            set.jwks()
                .keys
                .iter()
                .map(|k| k.kid.as_str())
                .collect::<Vec<_>>(),
            vec![new.kid.as_str(), old.kid.as_str()]
        );
        // A token signed while `old` was newest still verifies with the rotated set.
        let before_rotation = KeySet::from_keys(&[old]).unwrap();
        assert!(round_trip(&before_rotation, &set).is_ok());
    }

    #[test]
    fn jwks_has_the_rfc_8037_shape() {
        let key = generate_signing_key(Timestamp::from_unix_seconds(1));
        let set = KeySet::from_keys(std::slice::from_ref(&key)).unwrap();
        let json = serde_json::to_string(set.jwks()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(&key.public_key);
        assert_eq!(
            json,
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"{}","use":"sig","alg":"EdDSA"}}]}}"#,
                key.kid
            )
        );
    }

    #[test]
    fn corrupt_keys_are_refused() {
        let key = generate_signing_key(Timestamp::from_unix_seconds(1));
        let other = generate_signing_key(Timestamp::from_unix_seconds(1));
        let mismatched = SigningKey {
            public_key: other.public_key,
            ..key.clone()
        };
        assert!(matches!(
            KeySet::from_keys(&[mismatched]),
            Err(Error::Internal(_))
        ));
        let short = SigningKey {
            private_key: vec![1, 2, 3],
            ..key
        };
        assert!(matches!(
            KeySet::from_keys(&[short]),
            Err(Error::Internal(_))
        ));
        assert!(matches!(KeySet::from_keys(&[]), Err(Error::Internal(_))));
    }

    #[tokio::test]
    async fn keys_persist_across_restarts() {
        let store = MemStore::default();
        let clock = ManualClock::new(Timestamp::from_unix_seconds(1_700_000_000));
        let first = KeySet::load_or_create(&store, &clock).await.unwrap();
        assert_eq!(store.signing_keys().await.unwrap().len(), 1);
        let second = KeySet::load_or_create(&store, &clock).await.unwrap();
        assert_eq!(first.signing_kid(), second.signing_kid());
        assert_eq!(
            store.signing_keys().await.unwrap().len(),
            1,
            "no second key"
        );
        assert!(round_trip(&first, &second).is_ok());
    }
}
