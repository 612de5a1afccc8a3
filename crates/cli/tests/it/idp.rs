//! A stand-in OpenID Connect provider (Keycloak- or Entra-like) served by the test on
//! loopback: a discovery document and a JWKS built from the test-only keys in
//! crates/server/src/oauth/external/testdata, and tokens signed with them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The audience tokens of the test IdP are issued for.
pub const AUDIENCE: &str = "api://appfence";

const TESTDATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../server/src/oauth/external/testdata"
);

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The DER inside a PEM file (jsonwebtoken is built without its PEM parser).
fn pem_body(name: &str) -> Vec<u8> {
    let text = String::from_utf8(testdata(name)).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Test keys by kid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKey {
    RsaA,
    RsaB,
    Ec,
    Ed,
}

impl TestKey {
    pub fn kid(self) -> &'static str {
        match self {
            TestKey::RsaA => "rsa-a",
            TestKey::RsaB => "rsa-b",
            TestKey::Ec => "ec-p256",
            TestKey::Ed => "ed25519",
        }
    }

    fn encoding_key(self) -> (Algorithm, EncodingKey) {
        match self {
            TestKey::RsaA => (
                Algorithm::RS256,
                EncodingKey::from_rsa_der(&pem_body("rsa-a.pem")),
            ),
            TestKey::RsaB => (
                Algorithm::RS256,
                EncodingKey::from_rsa_der(&pem_body("rsa-b.pem")),
            ),
            TestKey::Ec => (
                Algorithm::ES256,
                EncodingKey::from_ec_der(&pem_body("ec-p256.pem")),
            ),
            TestKey::Ed => (
                Algorithm::EdDSA,
                EncodingKey::from_ed_der(&pem_body("ed25519.pem")),
            ),
        }
    }
}

/// The JWKS of the given keys, from the committed test JWKS.
pub fn jwks_of(keys: &[TestKey]) -> Value {
    let all: Value = serde_json::from_slice(&testdata("jwks.json")).unwrap();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| keys.iter().any(|t| k["kid"] == t.kid()))
        .cloned()
        .collect();
    json!({ "keys": keys })
}

pub struct Idp {
    /// The `iss` of its tokens, e.g. `http://127.0.0.1:PORT/realms/corp`.
    pub issuer: String,
    /// How many times the JWKS was fetched.
    pub jwks_fetches: Arc<AtomicUsize>,
    /// What the JWKS endpoint serves; tests rotate keys by replacing it.
    pub published: Arc<Mutex<Value>>,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    /// Serves discovery and a JWKS holding `keys` on 127.0.0.1:0.
    pub async fn start(keys: &[TestKey]) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let issuer = format!("{base}/realms/corp");
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let published = Arc::new(Mutex::new(jwks_of(keys)));
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
            "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        });
        let (fetches, served) = (jwks_fetches.clone(), published.clone());
        let app = Router::new()
            .route(
                "/realms/corp/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route(
                "/realms/corp/protocol/openid-connect/certs",
                get(move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let jwks = served.lock().unwrap().clone();
                    Json(jwks)
                }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Idp {
            issuer,
            jwks_fetches,
            published,
            task,
        }
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The claims of a valid application token (client credentials), valid an hour
    /// around `now` (Unix seconds).
    pub fn app_claims(&self, now: i64, roles: &[&str]) -> Value {
        json!({
            "iss": self.issuer, "aud": AUDIENCE, "iat": now, "nbf": now - 60, "exp": now + 3600,
            "azp": "kc-soar", "app_displayname": "Keycloak SOAR", "roles": roles,
        })
    }

    /// The claims of a valid user token with delegated scopes and groups.
    pub fn user_claims(&self, now: i64, upn: &str, scopes: &str, groups: &[&str]) -> Value {
        json!({
            "iss": self.issuer, "aud": [AUDIENCE, "account"], "iat": now, "nbf": now - 60,
            "exp": now + 3600, "azp": "kc-portal", "scp": scopes,
            "oid": format!("oid-{upn}"), "preferred_username": upn, "groups": groups,
        })
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Signs `claims` with `key` under its own kid.
pub fn sign(key: TestKey, claims: &Value) -> String {
    sign_as(key, key.kid(), claims)
}

/// Signs `claims` with `key` but names `kid` in the header.
pub fn sign_as(key: TestKey, kid: &str, claims: &Value) -> String {
    let (alg, encoding) = key.encoding_key();
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// A token with any header and an arbitrary signature.
pub fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Replaces the payload of a signed token, keeping its header and signature.
pub fn tamper(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

/// The RSA public key of `rsa-a` as the PEM bytes an attacker would HMAC with.
pub fn rsa_a_public_modulus() -> Vec<u8> {
    let jwks = jwks_of(&[TestKey::RsaA]);
    URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["n"].as_str().unwrap())
        .unwrap()
}
