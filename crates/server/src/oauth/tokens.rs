//! Minting access tokens shaped like Entra ID's: application tokens (client
//! credentials) and delegated user tokens (password grant).

use std::time::Duration;

use appfence_core::authz::DELEGATED_SCOPES;
use appfence_core::records::UserRecord;
use appfence_core::{AppRegistration, Error};
use appfence_proto::Timestamp;
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use super::audience::TokenPolicy;
pub use super::audience::TokenVersion;
use super::keys::KeyMaterial;
use crate::AppState;

/// The claims of an access token. Application tokens carry `roles`; user tokens carry
/// `scp`, `upn`, `unique_name` and `groups` instead, as Entra writes them.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// `app` or `user`.
    pub idtyp: String,
    /// The application's client id, or the user's object id.
    pub oid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Delegated scopes, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    pub tid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    pub ver: String,
    pub jti: String,
}

/// Where a token is valid (audience, issuer) and when, and which client obtained it:
/// the part shared by application and user tokens. `audience` is used as given: callers
/// pass an audience accepted by the policy.
pub struct Issuance<'a> {
    pub policy: &'a TokenPolicy,
    pub app: &'a AppRegistration,
    pub audience: &'a str,
    pub version: TokenVersion,
    pub now: Timestamp,
    pub lifetime: Duration,
}

impl Issuance<'_> {
    /// The claims of an application token for the client.
    pub fn app_claims(&self) -> AccessTokenClaims {
        AccessTokenClaims {
            roles: self.app.roles.clone(),
            ..self.claims("app", &self.app.client_id)
        }
    }

    /// The claims of a token for `user`, obtained through the client: every delegated
    /// scope, and the user's groups, which decide the user's portal roles.
    pub fn user_claims(&self, user: &UserRecord) -> AccessTokenClaims {
        AccessTokenClaims {
            groups: Some(user.groups.clone()),
            scp: Some(DELEGATED_SCOPES.join(" ")),
            unique_name: Some(user.upn.clone()),
            upn: Some(user.upn.clone()),
            ..self.claims("user", &user.object_id)
        }
    }

    /// Claims for the subject `oid` of type `idtyp`, with no roles, scopes or user names.
    fn claims(&self, idtyp: &str, oid: &str) -> AccessTokenClaims {
        let iat = self.now.unix_seconds();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        AccessTokenClaims {
            aud: self.audience.to_string(),
            iss: self.policy.issuer(&self.app.tenant_id, self.version),
            iat,
            nbf: iat,
            exp: iat.saturating_add(lifetime),
            azp: (self.version == TokenVersion::V2).then(|| self.app.client_id.clone()),
            app_displayname: self.app.display_name.clone(),
            appid: self.app.client_id.clone(),
            groups: None,
            idtyp: idtyp.into(),
            oid: oid.into(),
            roles: Vec::new(),
            scp: None,
            tid: self.app.tenant_id.clone(),
            unique_name: None,
            upn: None,
            ver: self.version.claim().into(),
            jti: appfence_core::ids::new_guid(),
        }
    }
}

/// [`Issuance::app_claims`] from loose arguments, for tests.
#[cfg(test)]
pub(crate) fn app_token_claims(
    policy: &TokenPolicy,
    app: &AppRegistration,
    audience: &str,
    version: TokenVersion,
    now: Timestamp,
    lifetime: Duration,
) -> AccessTokenClaims {
    Issuance {
        policy,
        app,
        audience,
        version,
        now,
        lifetime,
    }
    .app_claims()
}

/// [`Issuance::user_claims`] from loose arguments, for tests.
#[cfg(test)]
pub(crate) fn user_token_claims(
    policy: &TokenPolicy,
    app: &AppRegistration,
    user: &UserRecord,
    audience: &str,
    version: TokenVersion,
    now: Timestamp,
    lifetime: Duration,
) -> AccessTokenClaims {
    Issuance {
        policy,
        app,
        audience,
        version,
        now,
        lifetime,
    }
    .user_claims(user)
}

/// Signs `claims` with the key that signs at `now`: header
/// `{"typ":"JWT","alg":"EdDSA","kid":...}`.
pub fn sign(
    keys: &KeyMaterial,
    claims: &AccessTokenClaims,
    now: Timestamp,
) -> Result<String, Error> {
    let (kid, key) = keys
        .signer(now)
        .ok_or_else(|| Error::internal("no signing key can sign now"))?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key)
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
    issue(state, app, audience, version, |i| i.app_claims())
}

/// A delegated access token for `user`, obtained through the client `app`, for
/// `audience` (any accepted spelling), issued now with the configured lifetime.
pub fn issue_user_token(
    state: &AppState,
    app: &AppRegistration,
    user: &UserRecord,
    audience: &str,
    version: TokenVersion,
) -> Result<String, Error> {
    issue(state, app, audience, version, |i| i.user_claims(user))
}

/// Checks the audience against the server's policy, then signs the claims `build` makes
/// for the canonical audience at the clock's time.
fn issue(
    state: &AppState,
    app: &AppRegistration,
    audience: &str,
    version: TokenVersion,
    build: impl FnOnce(&Issuance) -> AccessTokenClaims,
) -> Result<String, Error> {
    let policy = TokenPolicy::new(&state.public_url());
    let audience = policy.accept_audience(audience).ok_or_else(|| {
        Error::BadRequest(format!(
            "The audience '{}' is not accepted; use one of: {}",
            appfence_core::ids::truncate(audience, 200),
            policy.audiences().join(", ")
        ))
    })?;
    let now = state.clock.now();
    let claims = build(&Issuance {
        policy: &policy,
        app,
        audience,
        version,
        now,
        lifetime: state.config.token_lifetime,
    });
    sign(&state.keys.current(), &claims, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn app() -> AppRegistration {
        AppRegistration {
            tenant_id: "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69".into(),
            client_id: "6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b".into(),
            display_name: "SOAR".into(),
            roles: vec![
                "Machine.RestrictExecution".into(),
                "Machine.Read.All".into(),
            ],
            created: Timestamp::from_unix_seconds(1),
            disabled: None,
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
        let keys = crate::oauth::keys::KeyMaterial::for_tests();
        let claims = app_token_claims(
            &TokenPolicy::new("http://x"),
            &app(),
            "http://x",
            TokenVersion::V1,
            Timestamp::from_unix_seconds(1_700_000_000),
            Duration::from_secs(3599),
        );
        let token = sign(&keys, &claims, Timestamp::from_unix_seconds(1)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], keys.signing_kid());
        let body: AccessTokenClaims = serde_json::from_value(decode_part(parts[1])).unwrap();
        assert_eq!(body, claims);
    }

    fn user() -> UserRecord {
        UserRecord {
            tenant_id: app().tenant_id,
            object_id: "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a".into(),
            upn: "ana@example.com".into(),
            password_hash: String::new(),
            groups: vec!["tier2".into(), "servers".into()],
            created: Timestamp::from_unix_seconds(1),
            disabled: None,
        }
    }

    #[test]
    fn user_tokens_are_delegated_and_carry_scopes_and_groups() {
        let p = TokenPolicy::new("https://appfence.example");
        let now = Timestamp::from_unix_seconds(1_700_000_000);
        let claims = user_token_claims(
            &p,
            &app(),
            &user(),
            "https://api.securitycenter.microsoft.com",
            TokenVersion::V1,
            now,
            Duration::from_secs(3599),
        );
        let json = serde_json::to_value(&claims).unwrap();
        let app_claims = serde_json::to_value(app_token_claims(
            &p,
            &app(),
            "https://api.securitycenter.microsoft.com",
            TokenVersion::V1,
            now,
            Duration::from_secs(3599),
        ))
        .unwrap();
        // Where and when the token is valid, and the client, are those of an app token.
        for shared in [
            "aud",
            "iss",
            "iat",
            "nbf",
            "exp",
            "appid",
            "app_displayname",
            "tid",
            "ver",
        ] {
            assert_eq!(json[shared], app_claims[shared], "{shared}");
        }
        assert_eq!(json["idtyp"], "user");
        assert_eq!(json["oid"], "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a");
        assert_eq!(json["upn"], "ana@example.com");
        assert_eq!(json["unique_name"], "ana@example.com");
        assert_eq!(
            json["scp"],
            "Machine.Read Machine.ReadWrite Machine.RestrictExecution Machine.Offboard Ti.ReadWrite \
             Alert.Read Alert.ReadWrite"
        );
        assert_eq!(json["groups"], serde_json::json!(["tier2", "servers"]));
        // A user's token never carries the application's permissions.
        assert!(json.get("roles").is_none());
        assert!(json.get("azp").is_none());
        // And an application token carries no user claims.
        for user_claim in ["scp", "upn", "unique_name", "groups"] {
            assert!(app_claims.get(user_claim).is_none(), "{user_claim}");
        }

        let v2 = user_token_claims(
            &p,
            &app(),
            &user(),
            "https://appfence.example",
            TokenVersion::V2,
            now,
            Duration::from_secs(60),
        );
        assert_eq!(v2.azp.as_deref(), Some(app().client_id.as_str()));
        assert_eq!(v2.ver, "2.0");
    }

    #[test]
    fn a_signed_user_token_verifies_into_a_user_principal() {
        use crate::oauth::verify::verify_access_token;
        use appfence_core::authz::{Caller, DELEGATED_SCOPES};
        let keys = crate::oauth::keys::KeyMaterial::for_tests();
        let policy = TokenPolicy::new("https://appfence.example");
        for version in [TokenVersion::V1, TokenVersion::V2] {
            let claims = user_token_claims(
                &policy,
                &app(),
                &user(),
                "https://api.securitycenter.microsoft.com",
                version,
                Timestamp::from_unix_seconds(1_700_000_000),
                Duration::from_secs(3599),
            );
            let token = sign(&keys, &claims, Timestamp::from_unix_seconds(1)).unwrap();
            let p = verify_access_token(
                &keys,
                &policy,
                &token,
                Timestamp::from_unix_seconds(1_700_000_010),
            )
            .unwrap();
            assert_eq!(p.tenant_id, app().tenant_id);
            assert_eq!(
                p.caller,
                Caller::User {
                    object_id: user().object_id,
                    upn: "ana@example.com".into()
                }
            );
            assert_eq!(p.scopes, DELEGATED_SCOPES);
            assert_eq!(p.groups, ["tier2", "servers"]);
            assert!(p.roles.is_empty());
            assert_eq!(p.requestor(), "ana@example.com");
        }
    }
}
