//! An issuer's JWKS as verification keys, and the choice of the key that verifies a
//! given token. Only the allow-listed algorithms exist here, each bound to its key
//! type, so a public key can never be used as an HMAC secret and an RSA key never
//! verifies an ECDSA signature.

use appfence_core::ids::truncate;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::oauth::claims::QUOTE_MAX;

/// The accepted algorithms, as written in the JWT header.
pub const ACCEPTED: &str = "RS256, ES256, EdDSA";

/// An accepted algorithm, each bound to one key type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA keys (Entra, Keycloak's default).
    Rs256,
    /// ECDSA with P-256 and SHA-256, EC P-256 keys.
    Es256,
    /// Ed25519, OKP keys.
    EdDsa,
}

impl Accepted {
    /// The header's `alg`, if it is one of [`ACCEPTED`] (case-sensitive, RFC 7515 §4.1.1).
    pub fn from_header(alg: &str) -> Option<Accepted> {
        match alg {
            "RS256" => Some(Accepted::Rs256),
            "ES256" => Some(Accepted::Es256),
            "EdDSA" => Some(Accepted::EdDsa),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accepted::Rs256 => "RS256",
            Accepted::Es256 => "ES256",
            Accepted::EdDsa => "EdDSA",
        }
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            Accepted::Rs256 => Algorithm::RS256,
            Accepted::Es256 => Algorithm::ES256,
            Accepted::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// RFC 7518 §3.3: RSA keys of 2048 bits or more.
const MIN_RSA_BITS: usize = 2048;

/// A JWK as published; fields of other key types are simply absent.
#[derive(Deserialize)]
struct PublishedJwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// One published key: what it can verify, or why it cannot verify anything.
struct KeyEntry {
    kid: Option<String>,
    usable: Result<(Accepted, DecodingKey), String>,
}

/// The keys of one issuer, parsed once per fetch.
pub struct IssuerKeys {
    entries: Vec<KeyEntry>,
}

/// Why no key was chosen for a token.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// No key has this kid (or, without kid, none fits): a refetch may find it.
    Unknown,
    /// The key exists but cannot verify this token; the reason, for the refusal.
    Unsuitable(String),
}

impl IssuerKeys {
    /// Parses a JWKS document. Entries that are not signature keys of an accepted
    /// type (encryption keys, RSA-OAEP, P-384...) stay listed as unusable, so that a
    /// token naming them is refused with the reason rather than causing refetches.
    pub fn from_jwks(document: &serde_json::Value) -> Result<IssuerKeys, String> {
        let keys = document
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("the document is not a JWKS (no \"keys\" array)")?;
        let entries = keys
            .iter()
            .map(|key| match PublishedJwk::deserialize(key) {
                Ok(jwk) => KeyEntry {
                    kid: jwk.kid.clone(),
                    usable: verification_key(&jwk),
                },
                Err(e) => KeyEntry {
                    kid: key.get("kid").and_then(|k| k.as_str()).map(str::to_string),
                    usable: Err(format!("it is not a well-formed JWK ({e})")),
                },
            })
            .collect();
        Ok(IssuerKeys { entries })
    }

    /// How many keys can verify tokens, for the log.
    pub fn usable_count(&self) -> usize {
        self.entries.iter().filter(|e| e.usable.is_ok()).count()
    }

    /// The key that verifies a token signed with `alg` by the key `kid`. Without
    /// `kid`, the only key for `alg`, if there is exactly one.
    pub fn select(&self, kid: Option<&str>, alg: Accepted) -> Result<&DecodingKey, Miss> {
        let fits = |e: &KeyEntry| matches!(&e.usable, Ok((a, _)) if *a == alg);
        let Some(kid) = kid else {
            let mut fitting = self.entries.iter().filter(|e| fits(e));
            return match (fitting.next(), fitting.next()) {
                (Some(only), None) => Ok(key_of(only).expect("fits")),
                (None, _) => Err(Miss::Unknown),
                (Some(_), Some(_)) => Err(Miss::Unsuitable(format!(
                    "The token's header has no key id (kid) and its issuer publishes several {} keys",
                    alg.name()
                ))),
            };
        };
        let named = || {
            self.entries
                .iter()
                .filter(|e| e.kid.as_deref() == Some(kid))
        };
        if let Some(key) = named().find(|e| fits(e)).and_then(key_of) {
            return Ok(key);
        }
        let first = named().next().ok_or(Miss::Unknown)?;
        let reason = match &first.usable {
            Ok((other, _)) => format!("it verifies {}", other.name()),
            Err(reason) => reason.clone(),
        };
        Err(Miss::Unsuitable(format!(
            "The token's signing key '{}' cannot verify {}: {reason}",
            truncate(kid, QUOTE_MAX),
            alg.name()
        )))
    }
}

fn key_of(entry: &KeyEntry) -> Option<&DecodingKey> {
    entry.usable.as_ref().ok().map(|(_, key)| key)
}

/// The algorithm a JWK verifies and its key, or why it verifies nothing here.
fn verification_key(jwk: &PublishedJwk) -> Result<(Accepted, DecodingKey), String> {
    if let Some(use_) = jwk.use_.as_deref().filter(|u| *u != "sig") {
        return Err(format!("it is not a signature key (use '{use_}')"));
    }
    let kty = jwk.kty.as_deref().ok_or("it has no key type (kty)")?;
    let (alg, key) = match kty {
        "RSA" => (Accepted::Rs256, rsa_key(jwk)?),
        "EC" => (Accepted::Es256, ec_p256_key(jwk)?),
        "OKP" => (Accepted::EdDsa, ed25519_key(jwk)?),
        other => return Err(format!("its key type '{other}' is not accepted")),
    };
    if let Some(declared) = jwk.alg.as_deref() {
        if declared != alg.name() {
            return Err(format!("it is declared for '{declared}'"));
        }
    }
    Ok((alg, key))
}

fn component(jwk_field: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = jwk_field
        .as_deref()
        .ok_or_else(|| format!("it has no '{name}'"))?;
    // RFC 7518 asks for no padding; tolerate it rather than refuse a key over it.
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("its '{name}' is not base64url"))
}

fn rsa_key(jwk: &PublishedJwk) -> Result<DecodingKey, String> {
    let n = component(&jwk.n, "n")?;
    let e = component(&jwk.e, "e")?;
    let significant = &n[n.iter().take_while(|b| **b == 0).count()..];
    let bits = significant.len() * 8
        - significant
            .first()
            .map_or(8, |b| b.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "its RSA modulus has {bits} bits, fewer than {MIN_RSA_BITS}"
        ));
    }
    if e.is_empty() || e.iter().all(|b| *b == 0) {
        return Err("its RSA exponent is empty".into());
    }
    DecodingKey::from_rsa_components(
        jwk.n.as_deref().unwrap_or_default(),
        jwk.e.as_deref().unwrap_or_default(),
    )
    .map_err(|e| format!("its RSA components are not valid ({e})"))
}

fn ec_p256_key(jwk: &PublishedJwk) -> Result<DecodingKey, String> {
    match jwk.crv.as_deref() {
        Some("P-256") => {}
        Some(other) => return Err(format!("its curve '{other}' is not accepted")),
        None => return Err("it has no curve (crv)".into()),
    }
    let x = component(&jwk.x, "x")?;
    let y = component(&jwk.y, "y")?;
    if x.len() != 32 || y.len() != 32 {
        return Err("its P-256 coordinates are not 32 bytes each".into());
    }
    // A point off the curve is refused when a signature is checked against it.
    DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(&x), &URL_SAFE_NO_PAD.encode(&y))
        .map_err(|e| format!("its EC components are not valid ({e})"))
}

fn ed25519_key(jwk: &PublishedJwk) -> Result<DecodingKey, String> {
    match jwk.crv.as_deref() {
        Some("Ed25519") => {}
        Some(other) => return Err(format!("its curve '{other}' is not accepted")),
        None => return Err("it has no curve (crv)".into()),
    }
    let x = component(&jwk.x, "x")?;
    if x.len() != 32 {
        return Err("its Ed25519 public key is not 32 bytes".into());
    }
    DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&x))
        .map_err(|e| format!("its Ed25519 key is not valid ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn test_jwks() -> serde_json::Value {
        serde_json::from_str(include_str!("testdata/jwks.json")).unwrap()
    }

    fn jwk(kid: &str) -> serde_json::Value {
        test_jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone()
    }

    fn keys(list: Vec<serde_json::Value>) -> IssuerKeys {
        IssuerKeys::from_jwks(&json!({ "keys": list })).unwrap()
    }

    fn unsuitable(r: Result<&DecodingKey, Miss>) -> String {
        match r {
            Err(Miss::Unsuitable(m)) => m,
            Err(Miss::Unknown) => panic!("expected Unsuitable, got Unknown"),
            Ok(_) => panic!("expected Unsuitable, got a key"),
        }
    }

    #[test]
    fn only_the_allow_list_is_accepted() {
        for accepted in [Accepted::Rs256, Accepted::Es256, Accepted::EdDsa] {
            assert_eq!(Accepted::from_header(accepted.name()), Some(accepted));
        }
        assert_eq!(ACCEPTED, "RS256, ES256, EdDSA");
        for other in [
            "none", "HS256", "HS384", "HS512", "RS384", "PS256", "ES384", "rs256", "",
        ] {
            assert_eq!(Accepted::from_header(other), None, "{other}");
        }
    }

    #[test]
    fn each_key_verifies_only_its_own_algorithm() {
        let set = IssuerKeys::from_jwks(&test_jwks()).unwrap();
        assert_eq!(set.usable_count(), 4);
        assert!(set.select(Some("rsa-a"), Accepted::Rs256).is_ok());
        assert!(set.select(Some("ec-p256"), Accepted::Es256).is_ok());
        assert!(set.select(Some("ed25519"), Accepted::EdDsa).is_ok());
        assert_eq!(
            unsuitable(set.select(Some("rsa-a"), Accepted::Es256)),
            "The token's signing key 'rsa-a' cannot verify ES256: it verifies RS256"
        );
        assert_eq!(
            unsuitable(set.select(Some("ed25519"), Accepted::Rs256)),
            "The token's signing key 'ed25519' cannot verify RS256: it verifies EdDSA"
        );
        assert_eq!(
            set.select(Some("nope"), Accepted::Rs256).err(),
            Some(Miss::Unknown)
        );
    }

    #[test]
    fn without_kid_only_a_single_fitting_key_is_used() {
        let set = IssuerKeys::from_jwks(&test_jwks()).unwrap();
        // Two RSA keys: ambiguous. One EC key: used.
        assert!(unsuitable(set.select(None, Accepted::Rs256)).contains("several RS256 keys"));
        assert!(set.select(None, Accepted::Es256).is_ok());
        let rsa_only = keys(vec![jwk("rsa-a")]);
        assert!(rsa_only.select(None, Accepted::Rs256).is_ok());
        assert_eq!(
            rsa_only.select(None, Accepted::EdDsa).err(),
            Some(Miss::Unknown)
        );
    }

    #[test]
    fn use_alg_type_and_curve_must_fit() {
        let mut enc = jwk("rsa-a");
        enc["use"] = "enc".into();
        let mut oaep = jwk("rsa-b");
        oaep["alg"] = "RSA-OAEP".into();
        let mut p384 = jwk("ec-p256");
        p384["crv"] = "P-384".into();
        let mut x448 = jwk("ed25519");
        x448["crv"] = "X448".into();
        let hmac = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        let garbage = json!({"kty": "RSA", "kid": "junk", "n": 5});
        let set = keys(vec![enc, oaep, p384, x448, hmac, garbage]);
        assert_eq!(set.usable_count(), 0);
        for (kid, alg, reason) in [
            (
                "rsa-a",
                Accepted::Rs256,
                "it is not a signature key (use 'enc')",
            ),
            ("rsa-b", Accepted::Rs256, "it is declared for 'RSA-OAEP'"),
            (
                "ec-p256",
                Accepted::Es256,
                "its curve 'P-384' is not accepted",
            ),
            (
                "ed25519",
                Accepted::EdDsa,
                "its curve 'X448' is not accepted",
            ),
            (
                "hmac",
                Accepted::Rs256,
                "its key type 'oct' is not accepted",
            ),
        ] {
            assert!(
                unsuitable(set.select(Some(kid), alg)).ends_with(reason),
                "{kid}"
            );
        }
        assert!(
            unsuitable(set.select(Some("junk"), Accepted::Rs256)).contains("not a well-formed JWK")
        );
    }

    #[test]
    fn weak_or_malformed_components_are_refused() {
        let mut short = jwk("rsa-a");
        short["n"] = URL_SAFE_NO_PAD.encode([0xff; 128]).into();
        let mut bad_point = jwk("ec-p256");
        bad_point["x"] = URL_SAFE_NO_PAD.encode([1; 31]).into();
        let mut not_b64 = jwk("ed25519");
        not_b64["x"] = "***".into();
        let set = keys(vec![short, bad_point, not_b64]);
        assert!(unsuitable(set.select(Some("rsa-a"), Accepted::Rs256))
            .ends_with("1024 bits, fewer than 2048"));
        assert!(
            unsuitable(set.select(Some("ec-p256"), Accepted::Es256)).ends_with("not 32 bytes each")
        );
        assert!(unsuitable(set.select(Some("ed25519"), Accepted::EdDsa))
            .ends_with("its 'x' is not base64url"));
        assert!(IssuerKeys::from_jwks(&json!({"issuer": "x"})).is_err());
    }
}
