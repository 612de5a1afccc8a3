//! A stand-in external identity provider for the access benchmark: a JWKS served on
//! loopback from the test-only RSA key in crates/server/src/oauth/external/testdata,
//! the server's access settings that trust it, and an RS256 user token it signs.

use appfence_core::authz::SCOPE_READ;
use appfence_core::rbac::DeviceRule;
use appfence_server::access::{AccessSpec, DeviceGroupSpec, IssuerSpec, RoleSpec};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::setup::HTTP_HOST_PREFIX;

/// Test-only key material, published on purpose (see the testdata README); compiled in
/// so the benchmark binary does not depend on where it runs from.
const RSA_PEM: &str = include_str!("../../crates/server/src/oauth/external/testdata/rsa-a.pem");
const TEST_JWKS: &str = include_str!("../../crates/server/src/oauth/external/testdata/jwks.json");
const KID: &str = "rsa-a";

const AUDIENCE: &str = "api://appfence";
/// The user group (an Entra object id) that holds the role and the device group.
const ANALYSTS: &str = "7c1e0a52-3f4b-4d8e-9a61-2b5c8d9e0f13";
const USER_UPN: &str = "analyst@bench.example";

pub struct Idp {
    /// The `iss` of its tokens.
    pub issuer: String,
    jwks_uri: String,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    /// Serves the JWKS (the `rsa-a` public key) on 127.0.0.1:0.
    pub async fn start() -> Result<Idp, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind the identity provider: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("identity provider address: {e}"))?;
        let base = format!("http://{addr}");
        let jwks = published_jwks()?;
        let app = Router::new().route("/keys", get(move || async move { Json(jwks) }));
        let task = tokio::spawn(async move {
            // Ends when the task is aborted at drop; a serve error only shows up as a
            // failed key fetch, which the benchmark reports.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Idp {
            issuer: format!("{base}/realms/bench"),
            jwks_uri: format!("{base}/keys"),
            task,
        })
    }

    /// What the server is configured with: this issuer for the only tenant, a role with
    /// "View data" for the analysts' group, and a device group for the HTTP-enrolled
    /// devices open to that group only (so every delegated read passes a real
    /// device-group check).
    pub fn access_spec(&self) -> AccessSpec {
        AccessSpec {
            issuers: vec![IssuerSpec {
                line: None,
                issuer: self.issuer.clone(),
                audiences: vec![AUDIENCE.into()],
                jwks_uri: Some(self.jwks_uri.clone()),
                tenant: None,
                console: None,
            }],
            roles: vec![RoleSpec {
                line: None,
                name: "Bench analyst".into(),
                permissions: vec!["View data".into()],
                user_groups: vec![ANALYSTS.into()],
                tenant: None,
            }],
            device_groups: vec![DeviceGroupSpec {
                line: None,
                name: "Bench servers".into(),
                rank: 1,
                id: None,
                rule: DeviceRule::NamePrefix(HTTP_HOST_PREFIX.into()),
                user_groups: vec![ANALYSTS.into()],
                tenant: None,
            }],
        }
    }

    /// A delegated user token as Entra or Keycloak issues it (`scp`, `oid`, `upn`,
    /// `groups`), RS256, valid an hour from `now` (Unix seconds).
    pub fn user_token(&self, now: i64) -> Result<String, String> {
        let claims = json!({
            "iss": self.issuer, "aud": AUDIENCE, "iat": now, "nbf": now - 60,
            "exp": now + 3600, "azp": "bench-portal", "scp": SCOPE_READ,
            "oid": "0b7d4e2a-91c3-4f5e-8d6a-3c2b1a0f9e8d", "upn": USER_UPN,
            "groups": [ANALYSTS],
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KID.into());
        let key = EncodingKey::from_rsa_der(&pem_body(RSA_PEM)?);
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("signing: {e}"))
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The JWKS holding only the signing key.
fn published_jwks() -> Result<Value, String> {
    let all: Value = serde_json::from_str(TEST_JWKS).map_err(|e| format!("test JWKS: {e}"))?;
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kid"] == KID)
        .cloned()
        .collect();
    if keys.is_empty() {
        return Err(format!("the test JWKS has no key '{KID}'"));
    }
    Ok(json!({ "keys": keys }))
}

/// The DER inside a PEM (jsonwebtoken is built without its PEM parser).
fn pem_body(pem: &str) -> Result<Vec<u8>, String> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("test key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{DecodingKey, Validation};

    #[tokio::test]
    async fn the_served_jwks_verifies_the_user_token() {
        let idp = Idp::start().await.unwrap();
        let jwks: JwkSet = reqwest::get(&idp.jwks_uri)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(jwks.keys.len(), 1);
        let token = idp.user_token(4_000_000_000).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        let key = DecodingKey::from_jwk(jwks.find(KID).unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[&idp.issuer]);
        let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["scp"], SCOPE_READ);
        assert_eq!(claims["groups"][0], ANALYSTS);
        let spec = idp.access_spec();
        assert_eq!(spec.issuers[0].issuer, idp.issuer);
        assert_eq!(spec.roles[0].user_groups, spec.device_groups[0].user_groups);
    }
}
