//! The web console's sign-in through an external issuer (OpenID Connect authorization
//! code flow with PKCE; the browser part is in `console::external`): the issuer's
//! endpoints from its discovery document, redeeming a code at its token endpoint
//! (bounded in time and size, never following a redirect), and the ID token, verified
//! with the issuer's published keys exactly as the API's tokens are. An ID token's
//! audience is the console's client id; that audience is accepted here only, never by
//! the API's verifier.

use std::time::Duration;

use appfence_core::ids::truncate;
use appfence_core::Error;
use appfence_proto::{Secret, Timestamp};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::fetch::{check_url, discover_endpoints, send_bounded, Endpoints};
use super::{issuer_not_accepted, same_audience, ExternalIssuers};
use crate::access::spec::IssuerConfig;
use crate::oauth::claims::{refuse, PresentedClaims, QUOTE_MAX};
use crate::oauth::verify::check_validity;

/// Discovered endpoints are used this long before the discovery document is read again.
pub const ENDPOINTS_MAX_AGE: Duration = Duration::from_secs(3600);

/// What redeeming a code at the token endpoint takes.
pub struct CodeRedemption<'a> {
    pub code: &'a str,
    pub code_verifier: &'a str,
    pub redirect_uri: &'a str,
    pub client_id: &'a str,
    pub client_secret: Option<&'a Secret>,
}

/// Why a code was not redeemed.
#[derive(Debug, PartialEq, Eq)]
pub enum RedeemError {
    /// The issuer refused it (`invalid_grant`: used, expired, not this client's...).
    Refused(String),
    /// The issuer could not be reached or did not answer as OAuth says.
    Unavailable(String),
}

/// The person an ID token names, acting on the issuer's configured tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalUser {
    pub tenant_id: String,
    /// `oid` (the same id as in the issuer's access tokens), else `sub`.
    pub object_id: String,
    /// `upn`, else `preferred_username`, else `email`.
    pub upn: String,
    pub groups: Vec<String>,
}

impl ExternalIssuers {
    /// The authorization and token endpoints of configured issuer `iss`, from its
    /// discovery document (kept for [`ENDPOINTS_MAX_AGE`]).
    pub async fn endpoints(&self, iss: &str) -> Result<Endpoints, String> {
        if self.issuer(iss).is_none() {
            return Err(format!(
                "issuer '{}' is not configured",
                truncate(iss, QUOTE_MAX)
            ));
        }
        let now = self.clock.now();
        let cached = self
            .endpoints
            .read()
            .expect("external endpoints lock")
            .get(iss)
            .filter(|(_, at)| *at <= now && now < at.plus(ENDPOINTS_MAX_AGE))
            .map(|(e, _)| e.clone());
        if let Some(endpoints) = cached {
            return Ok(endpoints);
        }
        let endpoints = discover_endpoints(&self.http, iss).await?;
        self.endpoints
            .write()
            .expect("external endpoints lock")
            .insert(iss.to_string(), (endpoints.clone(), now));
        Ok(endpoints)
    }

    /// Redeems an authorization code; returns the ID token (not verified yet).
    pub async fn redeem_code(
        &self,
        endpoints: &Endpoints,
        r: &CodeRedemption<'_>,
    ) -> Result<String, RedeemError> {
        let url = endpoints.token_endpoint.as_str();
        check_url("token_endpoint", url).map_err(RedeemError::Unavailable)?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", r.code),
            ("redirect_uri", r.redirect_uri),
            ("client_id", r.client_id),
            ("code_verifier", r.code_verifier),
        ];
        let mut request = self
            .token_http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json");
        match r.client_secret {
            // RFC 6749 §2.3.1: each form-urlencoded, then HTTP Basic.
            Some(secret) if endpoints.secret_in_basic => {
                request = request.basic_auth(
                    form_encoded(r.client_id),
                    Some(form_encoded(secret.expose())),
                );
            }
            Some(secret) => form.push(("client_secret", secret.expose())),
            None => {}
        }
        let (status, body) = send_bounded(request.form(&form), url)
            .await
            .map_err(RedeemError::Unavailable)?;
        if status.is_success() {
            #[derive(Deserialize)]
            struct Answer {
                id_token: Option<String>,
            }
            let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
                RedeemError::Unavailable(format!("{url} did not return the expected JSON: {e}"))
            })?;
            return answer.id_token.ok_or_else(|| {
                RedeemError::Unavailable(format!(
                    "{url} returned no id_token (is openid among the console's scopes?)"
                ))
            });
        }
        #[derive(Deserialize)]
        struct Refusal {
            error: String,
            error_description: Option<String>,
        }
        match serde_json::from_slice::<Refusal>(&body) {
            Ok(refusal) if status.is_client_error() => Err(RedeemError::Refused(describe(
                &refusal.error,
                refusal.error_description.as_deref(),
            ))),
            _ => Err(RedeemError::Unavailable(format!(
                "{url} answered HTTP {}",
                status.as_u16()
            ))),
        }
    }

    /// Verifies an ID token of configured issuer `iss` for the console's client
    /// `client_id`: algorithm, key, signature, `exp`/`nbf` and `iss` as for the API's
    /// tokens; `aud` must hold `client_id` (and `azp`, if present with several
    /// audiences, must be it); `nonce` must be the one this sign-in sent.
    pub async fn verify_id_token(
        &self,
        token: &str,
        iss: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<ExternalUser, Error> {
        let issuer = self.issuer(iss).ok_or_else(|| issuer_not_accepted(iss))?;
        let claims = self.signed_claims(token, &issuer).await?;
        check_id_claims(claims, &issuer.config, client_id, nonce, self.clock.now())
    }
}

/// `error: description`, quoted no longer than [`QUOTE_MAX`] each.
pub(crate) fn describe(error: &str, description: Option<&str>) -> String {
    match description.filter(|d| !d.trim().is_empty()) {
        Some(d) => format!(
            "{}: {}",
            truncate(error, QUOTE_MAX),
            truncate(d.trim(), QUOTE_MAX)
        ),
        None => truncate(error, QUOTE_MAX).to_string(),
    }
}

fn form_encoded(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .unwrap_or_default()
        .trim_start_matches('=')
        .to_string()
}

fn check_id_claims(
    claims: PresentedClaims,
    config: &IssuerConfig,
    client_id: &str,
    nonce: &str,
    now: Timestamp,
) -> Result<ExternalUser, Error> {
    let (expires, not_before) = claims.validity()?;
    check_validity(expires, not_before, now)?;
    let audiences = claims.audiences()?;
    if !audiences.iter().any(|a| same_audience(a, client_id)) {
        return Err(refuse(format!(
            "The ID token's audience '{}' is not the console's client id",
            truncate(&audiences.join(" "), QUOTE_MAX)
        )));
    }
    // OpenID Connect Core §3.1.3.7: with several audiences, azp names the client.
    if audiences.len() > 1 {
        if let Some(azp) = claims.azp.as_deref().filter(|azp| *azp != client_id) {
            return Err(refuse(format!(
                "The ID token was issued to another client (azp '{}')",
                truncate(azp, QUOTE_MAX)
            )));
        }
    }
    let iss = claims
        .iss
        .as_deref()
        .ok_or_else(|| refuse("The token has no issuer (iss)"))?;
    if iss != config.issuer {
        return Err(issuer_not_accepted(iss));
    }
    let presented = claims.nonce.as_deref().unwrap_or_default();
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(refuse(
            "The ID token's nonce does not match this sign-in (it was issued for another one)",
        ));
    }
    let object_id = [claims.oid, claims.sub]
        .into_iter()
        .flatten()
        .find(|id| !id.is_empty())
        .ok_or_else(|| refuse("The ID token names no user (oid or sub)"))?;
    let upn = [claims.upn, claims.preferred_username, claims.email]
        .into_iter()
        .flatten()
        .find(|name| !name.trim().is_empty())
        .ok_or_else(|| {
            refuse("The ID token has no user name (upn, preferred_username or email)")
        })?;
    Ok(ExternalUser {
        tenant_id: config.tenant_id.clone(),
        object_id,
        upn,
        groups: claims.groups.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISSUER: &str = "https://idp.example/realms/corp";
    const CLIENT: &str = "appfence-console";
    /// 2026-12-07T00:00:00Z.
    const NOW: i64 = 1_796_601_600;

    fn config() -> IssuerConfig {
        IssuerConfig {
            issuer: ISSUER.into(),
            audiences: vec!["api://appfence".into()],
            jwks_uri: None,
            tenant_id: "t1".into(),
            console: None,
        }
    }

    fn claims(overrides: serde_json::Value) -> PresentedClaims {
        let mut base = json!({
            "iss": ISSUER, "aud": CLIENT, "exp": NOW + 300, "iat": NOW, "nonce": "n-1",
            "sub": "sub-1", "preferred_username": "ana@corp.example", "groups": ["g1"],
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn check(overrides: serde_json::Value) -> Result<ExternalUser, String> {
        check_id_claims(
            claims(overrides),
            &config(),
            CLIENT,
            "n-1",
            Timestamp::from_unix_seconds(NOW),
        )
        .map_err(|e| match e {
            Error::Unauthorized(m) => m,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn an_id_token_names_the_user_of_the_configured_tenant() {
        let user = check(json!({})).unwrap();
        assert_eq!(
            user,
            ExternalUser {
                tenant_id: "t1".into(),
                object_id: "sub-1".into(),
                upn: "ana@corp.example".into(),
                groups: vec!["g1".into()],
            }
        );
        // oid (as in the issuer's access tokens) wins over sub; upn over the rest.
        let user = check(json!({"oid": "oid-1", "upn": "u@corp", "email": "e@corp"})).unwrap();
        assert_eq!(
            (user.object_id.as_str(), user.upn.as_str()),
            ("oid-1", "u@corp")
        );
        let user = check(json!({"preferred_username": null, "email": "e@corp"})).unwrap();
        assert_eq!(user.upn, "e@corp");
        assert!(check(json!({"groups": null})).unwrap().groups.is_empty());
        // Several audiences: azp must be the console when it is there.
        assert!(check(json!({"aud": [CLIENT, "account"], "azp": CLIENT})).is_ok());
        assert!(check(json!({"aud": [CLIENT, "account"]})).is_ok());
    }

    #[test]
    fn what_an_id_token_is_refused_for() {
        for (overrides, expected) in [
            (json!({"nonce": "n-2"}), "nonce does not match"),
            (json!({"nonce": null}), "nonce does not match"),
            (
                json!({"aud": "api://appfence"}),
                "audience 'api://appfence' is not the console's client id",
            ),
            (
                json!({"aud": [CLIENT, "x"], "azp": "x"}),
                "issued to another client (azp 'x')",
            ),
            (
                json!({"iss": "https://other.example"}),
                "issuer 'https://other.example' is not accepted",
            ),
            (json!({"exp": NOW}), "expired"),
            (json!({"exp": null}), "no expiry"),
            (json!({"nbf": NOW + 1}), "not valid yet"),
            (json!({"sub": null}), "names no user (oid or sub)"),
            (json!({"preferred_username": ""}), "has no user name"),
        ] {
            let m = check(overrides.clone()).unwrap_err();
            assert!(m.contains(expected), "{overrides}: {m}");
        }
    }

    #[test]
    fn refusals_are_quoted_short() {
        assert_eq!(
            describe("invalid_grant", Some(" Code used ")),
            "invalid_grant: Code used"
        );
        assert_eq!(describe("invalid_grant", Some("")), "invalid_grant");
        assert!(describe("x", Some(&"d".repeat(5000))).len() < 2 * QUOTE_MAX + 10);
        assert_eq!(form_encoded("a b:c"), "a+b%3Ac");
    }
}
