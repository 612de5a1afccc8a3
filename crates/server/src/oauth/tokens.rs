//! Minting application access tokens shaped like Entra ID's.

use std::time::Duration;

use appfence_core::{AppRegistration, Error};
use appfence_proto::Timestamp;
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use super::audience::TokenPolicy;
pub use super::audience::TokenVersion;
use super::keys::KeySet;
use crate::AppState;

/// The claims of an application token, in the order Entra writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// The client id; v2 tokens name the client here (v1 tokens only in `appid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    pub app_displayname: String,
    pub appid: String,
    pub idtyp: String,
    pub oid: String,
    pub roles: Vec<String>,
    pub tid: String,
    pub ver: String,
    pub jti: String,
}

/// The claims of a token for `app`, valid from `now` for `lifetime`. `audience` is used
/// as given: callers pass an audience accepted by the policy.
pub fn app_token_claims(
    policy: &TokenPolicy,
    app: &AppRegistration,
    audience: &str,
    version: TokenVersion,
    now: Timestamp,
    lifetime: Duration,
) -> AccessTokenClaims {
    let iat = now.unix_seconds();
    let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    AccessTokenClaims {
        aud: audience.to_string(),
        iss: policy.issuer(&app.tenant_id, version),
        iat,
        nbf: iat,
        exp: iat.saturating_add(lifetime),
        azp: (version == TokenVersion::V2).then(|| app.client_id.clone()),
        app_displayname: app.display_name.clone(),
        appid: app.client_id.clone(),
        idtyp: "app".into(),
        oid: app.client_id.clone(),
        roles: app.roles.clone(),
        tid: app.tenant_id.clone(),
        ver: version.claim().into(),
        jti: appfence_core::ids::new_guid(),
    }
}

/// Signs `claims` with the newest key: header `{"typ":"JWT","alg":"EdDSA","kid":...}`.
pub fn sign(keys: &KeySet, claims: &AccessTokenClaims) -> Result<String, Error> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(keys.signing_kid().to_string());
    jsonwebtoken::encode(&header, claims, keys.encoding_key())
        .map_err(|e| Error::internal(format!("cannot sign a token: {e}")))
}

/// An access token for `app` and `audience` (any accepted spelling), issued now by the
/// server's clock with the configured lifetime.
pub fn issue_app_token(
    state: &AppState,
    app: &AppRegistration,
    audience: &str,
    version: TokenVersion,
) -> Result<String, Error> {
    let policy = TokenPolicy::new(&state.public_url());
    let audience = policy.accept_audience(audience).ok_or_else(|| {
        Error::BadRequest(format!(
            "The audience '{}' is not accepted; use one of: {}",
            appfence_core::ids::truncate(audience, 200),
            policy.audiences().join(", ")
        ))
    })?;
    let claims = app_token_claims(
        &policy,
        app,
        audience,
        version,
        state.clock.now(),
        state.config.token_lifetime,
    );
    sign(&state.keys, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::keys::generate_signing_key;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn app() -> AppRegistration {
        AppRegistration {
            tenant_id: "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69".into(),
            client_id: "6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b".into(),
            display_name: "SOAR".into(),
            secret_hash: String::new(),
            roles: vec![
                "Machine.RestrictExecution".into(),
                "Machine.Read.All".into(),
            ],
            created: Timestamp::from_unix_seconds(1),
        }
    }

    fn decode_part(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn v1_and_v2_claims_look_like_entra() {
        let p = TokenPolicy::new("https://appfence.example");
        let now = Timestamp::from_unix_seconds(1_700_000_000);
        let v1 = app_token_claims(
            &p,
            &app(),
            "https://api.securitycenter.microsoft.com",
            TokenVersion::V1,
            now,
            Duration::from_secs(3599),
        );
        let json = serde_json::to_value(&v1).unwrap();
        assert_eq!(json["aud"], "https://api.securitycenter.microsoft.com");
        assert_eq!(
            json["iss"],
            "https://appfence.example/0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69/"
        );
        assert_eq!(json["iat"], 1_700_000_000);
        assert_eq!(json["nbf"], 1_700_000_000);
        assert_eq!(json["exp"], 1_700_003_599);
        assert_eq!(json["appid"], "6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b");
        assert_eq!(json["oid"], json["appid"]);
        assert_eq!(json["app_displayname"], "SOAR");
        assert_eq!(
            json["roles"],
            serde_json::json!(["Machine.RestrictExecution", "Machine.Read.All"])
        );
        assert_eq!(json["ver"], "1.0");
        assert_eq!(json["idtyp"], "app");
        assert!(json.get("azp").is_none());
        assert_eq!(json["jti"].as_str().unwrap().len(), 36);

        let v2 = app_token_claims(
            &p,
            &app(),
            "https://appfence.example",
            TokenVersion::V2,
            now,
            Duration::from_secs(60),
        );
        assert_eq!(
            v2.iss,
            "https://appfence.example/0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69/v2.0"
        );
        assert_eq!(
            v2.azp.as_deref(),
            Some("6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(v2.ver, "2.0");
        assert_ne!(v1.jti, v2.jti);
    }

    #[test]
    fn signed_tokens_carry_the_kid_and_eddsa() {
        let keys =
            KeySet::from_keys(&[generate_signing_key(Timestamp::from_unix_seconds(1))]).unwrap();
        let claims = app_token_claims(
            &TokenPolicy::new("http://x"),
            &app(),
            "http://x",
            TokenVersion::V1,
            Timestamp::from_unix_seconds(1_700_000_000),
            Duration::from_secs(3599),
        );
        let token = sign(&keys, &claims).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], keys.signing_kid());
        let body: AccessTokenClaims = serde_json::from_value(decode_part(parts[1])).unwrap();
        assert_eq!(body, claims);
    }
}
