//! Verifying bearer tokens of the built-in issuer. Pure: the time and the policy are
//! arguments, so every rule is tested with an exact clock. Each refusal says what is
//! wrong with the token, never anything about the server's internals.

use std::collections::HashSet;

use appfence_core::authz::Principal;
use appfence_core::ids::truncate;
use appfence_core::Error;
use appfence_proto::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use super::audience::TokenPolicy;
use super::claims::{read_header, refuse, PresentedClaims, QUOTE_MAX};
use super::keys::{KeyMaterial, ALGORITHM};

/// Longer bearer tokens are refused before any parsing; ours are well under 2 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Checks a bearer token issued by this server at time `now`: algorithm (exactly
/// EdDSA), key id, signature, `exp` and `nbf` (no leeway), audience, and issuer. The
/// caller still has to check that the tenant `tid` exists.
pub fn verify_access_token(
    keys: &KeyMaterial,
    policy: &TokenPolicy,
    token: &str,
    now: Timestamp,
) -> Result<Principal, Error> {
    verify_token(keys, policy, token, now).map(|v| v.principal)
}

/// A token whose signature, audience and issuer were checked; only its validity in
/// time depends on when it is presented, so it can be cached and re-checked cheaply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub principal: Principal,
    /// `exp`, in ticks.
    pub expires: i64,
    /// `nbf`, in ticks.
    pub not_before: Option<i64>,
    /// For a token of the built-in issuer, the client that obtained it (`appid`): its
    /// application and user are checked on every use (`principal_state`). `None` for
    /// tokens of external issuers, whose lifecycle is the issuer's.
    pub own_client: Option<String>,
}

impl VerifiedToken {
    /// `exp` and `nbf` against `now`, without leeway.
    pub fn check_time(&self, now: Timestamp) -> Result<(), Error> {
        check_validity(self.expires, self.not_before, now)
    }
}

pub(crate) fn check_validity(
    expires: i64,
    not_before: Option<i64>,
    now: Timestamp,
) -> Result<(), Error> {
    if now.ticks() >= expires {
        return Err(refuse("The token has expired"));
    }
    if not_before.is_some_and(|nbf| now.ticks() < nbf) {
        return Err(refuse("The token is not valid yet (nbf)"));
    }
    Ok(())
}

/// [`verify_access_token`], keeping the validity period for [`VerifiedToken::check_time`].
pub fn verify_token(
    keys: &KeyMaterial,
    policy: &TokenPolicy,
    token: &str,
    now: Timestamp,
) -> Result<VerifiedToken, Error> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(refuse("The token is too large"));
    }
    let header = read_header(token)?;
    let alg = header
        .alg
        .ok_or_else(|| refuse("The token's header has no algorithm (alg)"))?;
    if alg != ALGORITHM {
        return Err(refuse(format!(
            "The token's algorithm '{}' is not accepted; tokens must be signed with EdDSA",
            truncate(&alg, QUOTE_MAX)
        )));
    }
    let kid = header
        .kid
        .ok_or_else(|| refuse("The token's header has no key id (kid)"))?;
    let key = keys.decoding_key(&kid, now).ok_or_else(|| {
        refuse(format!(
            "The token's signing key '{}' is not known",
            truncate(&kid, QUOTE_MAX)
        ))
    })?;

    let claims = jsonwebtoken::decode::<PresentedClaims>(token, key, &signature_only())
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => refuse("The token's signature is invalid"),
            ErrorKind::Json(_) => refuse("The token's claims are not well-formed"),
            _ => refuse("The token is not a well-formed JWT"),
        })?
        .claims;
    check_claims(claims, policy, now)
}

/// Signature and algorithm only: jsonwebtoken's own time checks read the system clock,
/// so they are off and `check_claims` applies the injected time instead.
fn signature_only() -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims = HashSet::new();
    v.leeway = 0;
    v
}

fn check_claims(
    c: PresentedClaims,
    policy: &TokenPolicy,
    now: Timestamp,
) -> Result<VerifiedToken, Error> {
    let (expires, not_before) = c.validity()?;
    check_validity(expires, not_before, now)?;
    let audiences = c.audiences()?;
    if !audiences
        .iter()
        .any(|a| policy.accept_audience(a).is_some())
    {
        return Err(refuse(format!(
            "The token's audience '{}' is not accepted",
            truncate(&audiences.join(" "), QUOTE_MAX)
        )));
    }

    let tid = c
        .tid
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| refuse("The token has no tenant id (tid)"))?;
    let iss = c
        .iss
        .as_deref()
        .ok_or_else(|| refuse("The token has no issuer (iss)"))?;
    if !policy.accepts_issuer(iss, &tid) {
        return Err(refuse(format!(
            "The token's issuer '{}' is not accepted",
            truncate(iss, QUOTE_MAX)
        )));
    }
    let own_client = c
        .appid
        .clone()
        .or_else(|| c.azp.clone())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| refuse("The token has no application id (appid)"))?;
    Ok(VerifiedToken {
        principal: c.into_principal(tid)?,
        expires,
        not_before,
        own_client: Some(own_client),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::audience::TokenVersion;
    use crate::oauth::tokens::{app_token_claims, sign, AccessTokenClaims};
    use appfence_core::authz::Caller;
    use appfence_core::AppRegistration;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use std::time::Duration;

    const T0: i64 = 1_700_000_000;
    const PUBLIC: &str = "https://appfence.example";

    fn keys() -> crate::oauth::keys::KeyMaterial {
        crate::oauth::keys::KeyMaterial::for_tests()
    }

    fn policy() -> TokenPolicy {
        TokenPolicy::new(PUBLIC)
    }

    fn app() -> AppRegistration {
        AppRegistration {
            tenant_id: "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69".into(),
            client_id: "6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b".into(),
            display_name: "SOAR".into(),
            roles: vec!["Machine.RestrictExecution".into()],
            created: Timestamp::from_unix_seconds(1),
            disabled: None,
        }
    }

    fn claims(version: TokenVersion) -> AccessTokenClaims {
        app_token_claims(
            &policy(),
            &app(),
            "https://api.securitycenter.microsoft.com",
            version,
            Timestamp::from_unix_seconds(T0),
            Duration::from_secs(3599),
        )
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(seconds)
    }

    fn message(r: Result<Principal, Error>) -> String {
        match r {
            Err(Error::Unauthorized(m)) => m,
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }

    /// A token with an arbitrary header and body and a garbage signature.
    fn forged(header: serde_json::Value, body: &AccessTokenClaims, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(body).unwrap()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    #[test]
    fn a_valid_token_becomes_a_principal() {
        let k = keys();
        for version in [TokenVersion::V1, TokenVersion::V2] {
            let token = sign(&k, &claims(version), Timestamp::from_unix_seconds(1)).unwrap();
            let p = verify_access_token(&k, &policy(), &token, at(T0 + 10)).unwrap();
            assert_eq!(p.tenant_id, app().tenant_id);
            assert_eq!(
                p.caller,
                Caller::Application {
                    client_id: app().client_id,
                    display_name: "SOAR".into()
                }
            );
            assert_eq!(p.roles, vec!["Machine.RestrictExecution".to_string()]);
        }
    }

    #[test]
    fn expiry_and_not_before_use_the_given_time_without_leeway() {
        let k = keys();
        let token = sign(
            &k,
            &claims(TokenVersion::V1),
            Timestamp::from_unix_seconds(1),
        )
        .unwrap();
        let p = policy();
        assert!(verify_access_token(&k, &p, &token, at(T0)).is_ok());
        assert!(verify_access_token(
            &k,
            &p,
            &token,
            Timestamp::from_ticks(at(T0 + 3599).ticks() - 1)
        )
        .is_ok());
        assert_eq!(
            message(verify_access_token(&k, &p, &token, at(T0 + 3599))),
            "The token has expired"
        );
        assert_eq!(
            message(verify_access_token(&k, &p, &token, at(T0 + 100_000))),
            "The token has expired"
        );
        assert_eq!(
            message(verify_access_token(
                &k,
                &p,
                &token,
                Timestamp::from_ticks(at(T0).ticks() - 1)
            )),
            "The token is not valid yet (nbf)"
        );
    }

    #[test]
    fn audiences_other_than_the_api_are_refused() {
        let k = keys();
        let mut c = claims(TokenVersion::V1);
        c.aud = "https://graph.microsoft.com".into();
        let token = sign(&k, &c, Timestamp::from_unix_seconds(1)).unwrap();
        assert_eq!(
            message(verify_access_token(&k, &policy(), &token, at(T0 + 1))),
            "The token's audience 'https://graph.microsoft.com' is not accepted"
        );
        c.aud = format!("{PUBLIC}/");
        let token = sign(&k, &c, Timestamp::from_unix_seconds(1)).unwrap();
        assert!(verify_access_token(&k, &policy(), &token, at(T0 + 1)).is_ok());
    }

    #[test]
    fn issuers_must_be_ours_and_match_the_tenant() {
        let k = keys();
        let mut c = claims(TokenVersion::V1);
        c.iss = format!("https://sts.windows.net/{}/", c.tid);
        let token = sign(&k, &c, Timestamp::from_unix_seconds(1)).unwrap();
        assert_eq!(
            message(verify_access_token(&k, &policy(), &token, at(T0 + 1))),
            format!(
                "The token's issuer 'https://sts.windows.net/{}/' is not accepted",
                c.tid
            )
        );
        // Our issuer, but for another tenant than the token's `tid`.
        let mut c = claims(TokenVersion::V2);
        c.tid = "11111111-2222-3333-4444-555555555555".into();
        let token = sign(&k, &c, Timestamp::from_unix_seconds(1)).unwrap();
        assert!(message(verify_access_token(&k, &policy(), &token, at(T0 + 1))).contains("issuer"));
        // Tokens of another server (another public URL) are refused.
        let token = sign(
            &k,
            &claims(TokenVersion::V1),
            Timestamp::from_unix_seconds(1),
        )
        .unwrap();
        let other = TokenPolicy::new("https://other.example");
        assert!(message(verify_access_token(&k, &other, &token, at(T0 + 1))).contains("issuer"));
    }

    #[test]
    fn a_tampered_or_foreign_signature_is_refused() {
        let k = keys();
        let token = sign(
            &k,
            &claims(TokenVersion::V1),
            Timestamp::from_unix_seconds(1),
        )
        .unwrap();
        // Change the body (more roles) and keep the signature.
        let mut c = claims(TokenVersion::V1);
        c.roles.push("Machine.ReadWrite.All".into());
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert_eq!(
            message(verify_access_token(&k, &policy(), &tampered, at(T0 + 1))),
            "The token's signature is invalid"
        );
        // Same kid, different key.
        let impostor = crate::oauth::keys::KeyMaterial::for_tests_named(Some(k.signing_kid()));
        let token = sign(
            &impostor,
            &claims(TokenVersion::V1),
            Timestamp::from_unix_seconds(1),
        )
        .unwrap();
        assert_eq!(
            message(verify_access_token(&k, &policy(), &token, at(T0 + 1))),
            "The token's signature is invalid"
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let k = keys();
        let c = claims(TokenVersion::V1);
        let token = forged(
            serde_json::json!({"alg": "none", "typ": "JWT", "kid": k.signing_kid()}),
            &c,
            b"",
        );
        assert_eq!(
            message(verify_access_token(&k, &policy(), &token, at(T0 + 1))),
            "The token's algorithm 'none' is not accepted; tokens must be signed with EdDSA"
        );
        // Unsigned token with an empty signature part and no alg at all.
        let token = forged(
            serde_json::json!({"typ": "JWT", "kid": k.signing_kid()}),
            &c,
            b"",
        );
        assert_eq!(
            message(verify_access_token(&k, &policy(), &token, at(T0 + 1))),
            "The token's header has no algorithm (alg)"
        );
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        // The classic key-confusion attack: HMAC keyed with the (public) verification key.
        let k = keys();
        let public = URL_SAFE_NO_PAD
            .decode(&k.jwks(Timestamp::from_unix_seconds(1)).keys[0].x)
            .unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(k.signing_kid().into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(TokenVersion::V1),
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(
            message(verify_access_token(&k, &policy(), &token, at(T0 + 1))),
            "The token's algorithm 'HS256' is not accepted; tokens must be signed with EdDSA"
        );
    }

    #[test]
    fn unknown_or_missing_kid_is_refused() {
        let k = keys();
        let other = keys();
        let token = sign(
            &other,
            &claims(TokenVersion::V1),
            Timestamp::from_unix_seconds(1),
        )
        .unwrap();
        assert_eq!(
            message(verify_access_token(&k, &policy(), &token, at(T0 + 1))),
            format!(
                "The token's signing key '{}' is not known",
                other.signing_kid()
            )
        );
        let token = forged(
            serde_json::json!({"alg": "EdDSA"}),
            &claims(TokenVersion::V1),
            &[0; 64],
        );
        assert_eq!(
            message(verify_access_token(&k, &policy(), &token, at(T0 + 1))),
            "The token's header has no key id (kid)"
        );
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let k = keys();
        let p = policy();
        for token in [
            "",
            "abc",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "....",
            "é.é.é",
            "eyJhbGciOiJFZERTQSJ9.x.y",
        ] {
            let m = message(verify_access_token(&k, &p, token, at(T0)));
            assert!(
                m.contains("well-formed") || m.contains("key id"),
                "{token}: {m}"
            );
        }
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            message(verify_access_token(&k, &p, &huge, at(T0))),
            "The token is too large"
        );
        // A correctly signed token whose claims have the wrong types.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(k.signing_kid().into());
        let token = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"exp": "tomorrow", "aud": PUBLIC}),
            k.encoding_key(),
        )
        .unwrap();
        assert_eq!(
            message(verify_access_token(&k, &p, &token, at(T0))),
            "The token's claims are not well-formed"
        );
    }

    #[test]
    fn required_claims_are_named_when_missing() {
        let k = keys();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(k.signing_kid().into());
        let c = serde_json::to_value(claims(TokenVersion::V1)).unwrap();
        for (claim, expected) in [
            ("exp", "The token has no expiry (exp)"),
            ("aud", "The token has no audience (aud)"),
            ("tid", "The token has no tenant id (tid)"),
            ("iss", "The token has no issuer (iss)"),
            ("appid", "The token has no application id (appid)"),
        ] {
            let mut body = c.clone();
            body.as_object_mut().unwrap().remove(claim);
            let token = jsonwebtoken::encode(&header, &body, k.encoding_key()).unwrap();
            assert_eq!(
                message(verify_access_token(&k, &policy(), &token, at(T0 + 1))),
                expected
            );
        }
        // Without roles the principal simply has none.
        let mut body = c.clone();
        body.as_object_mut().unwrap().remove("roles");
        let token = jsonwebtoken::encode(&header, &body, k.encoding_key()).unwrap();
        assert!(verify_access_token(&k, &policy(), &token, at(T0 + 1))
            .unwrap()
            .roles
            .is_empty());
        // A user token is not an application token.
        let mut body = c;
        body["idtyp"] = "user".into();
        let token = jsonwebtoken::encode(&header, &body, k.encoding_key()).unwrap();
        assert!(
            message(verify_access_token(&k, &policy(), &token, at(T0 + 1)))
                .contains("identity type")
        );
    }
}
