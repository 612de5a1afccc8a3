//! External OpenID Connect issuers (Entra ID, Keycloak...) declared in the config
//! file: their tokens are verified with the keys they publish and act on the
//! configured appfence tenant.
//!
//! - [`fetch`]: the discovery document and the JWKS, over https.
//! - [`keys`]: JWKs as verification keys; the algorithm allow-list.
//! - [`cache`]: the keys of one issuer, fetched lazily and refetched sparingly.
//! - [`code_flow`]: the web console's sign-in through an issuer (authorization code
//!   flow): its endpoints, redeeming a code, and the ID token.
//!
//! Only the keys the issuer publishes at its configured (or discovered) `jwks_uri`
//! are used: the header's `jku`, `x5u` and `jwk` are never followed.

mod cache;
mod code_flow;
mod fetch;
mod keys;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use appfence_core::ids::truncate;
use appfence_core::{Clock, Error};
use appfence_proto::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};

use self::cache::{Fetcher, KeyCache};
use self::keys::{Accepted, ACCEPTED};
use super::claims::{read_header, refuse, PresentedClaims, QUOTE_MAX};
use super::verify::{check_validity, VerifiedToken, MAX_TOKEN_BYTES};
use crate::access::spec::IssuerConfig;

pub use self::cache::{MAX_KEY_AGE, REFETCH_INTERVAL};
pub(crate) use self::code_flow::describe;
pub use self::code_flow::{CodeRedemption, ExternalUser, RedeemError, ENDPOINTS_MAX_AGE};
pub use self::fetch::{check_url, Endpoints, FETCH_TIMEOUT, MAX_DOCUMENT_BYTES};

/// The configured external issuers and their cached keys.
pub struct ExternalIssuers {
    http: reqwest::Client,
    /// For token endpoints: never follows a redirect (a code, a verifier and maybe a
    /// client secret are in the body).
    token_http: reqwest::Client,
    clock: Arc<dyn Clock>,
    issuers: RwLock<HashMap<String, Arc<Issuer>>>,
    /// Discovered authorization and token endpoints, by issuer, with when.
    endpoints: RwLock<HashMap<String, (Endpoints, Timestamp)>>,
}

struct Issuer {
    config: IssuerConfig,
    keys: Arc<KeyCache>,
}

impl ExternalIssuers {
    pub fn new(http: reqwest::Client, clock: Arc<dyn Clock>) -> Self {
        let token_http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Fails only when the TLS backend cannot start, which `http` needed too.
            .unwrap_or_else(|_| http.clone());
        ExternalIssuers {
            http,
            token_http,
            clock,
            issuers: RwLock::new(HashMap::new()),
            endpoints: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces the configured issuers (SIGHUP reload). An issuer whose `issuer` and
    /// `jwks_uri` did not change keeps its cached keys; the others start empty.
    pub fn configure(&self, issuers: Vec<IssuerConfig>) {
        let mut current = self.issuers.write().expect("external issuers lock");
        let previous = std::mem::take(&mut *current);
        for config in issuers {
            let keys = previous
                .get(&config.issuer)
                .filter(|old| old.keys.serves(&config.jwks_uri))
                .map(|old| old.keys.clone())
                .unwrap_or_else(|| Arc::new(KeyCache::new(config.jwks_uri.clone())));
            current.insert(config.issuer.clone(), Arc::new(Issuer { config, keys }));
        }
        self.endpoints
            .write()
            .expect("external endpoints lock")
            .clear();
    }

    /// Whether `iss` is a configured external issuer (exact match).
    pub fn knows(&self, iss: &str) -> bool {
        self.issuer(iss).is_some()
    }

    fn issuer(&self, iss: &str) -> Option<Arc<Issuer>> {
        self.issuers
            .read()
            .expect("external issuers lock")
            .get(iss)
            .cloned()
    }

    /// Verifies a token whose unverified `iss` names a configured issuer: algorithm
    /// (allow-listed), key (published by the issuer), signature, `exp` and `nbf`
    /// (without leeway), audience and issuer. The principal acts on the issuer's
    /// configured tenant; a `tid` claim is the issuer's own and is not consulted.
    pub async fn verify(&self, token: &str, iss: &str) -> Result<VerifiedToken, Error> {
        let issuer = self.issuer(iss).ok_or_else(|| issuer_not_accepted(iss))?;
        let claims = self.signed_claims(token, &issuer).await?;
        check_claims(claims, &issuer.config, self.clock.now())
    }

    /// The claims of `token` once its algorithm, key and signature are checked.
    async fn signed_claims(&self, token: &str, issuer: &Issuer) -> Result<PresentedClaims, Error> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refuse("The token is too large"));
        }
        let header = read_header(token)?;
        let alg_text = header
            .alg
            .ok_or_else(|| refuse("The token's header has no algorithm (alg)"))?;
        let alg = Accepted::from_header(&alg_text).ok_or_else(|| {
            refuse(format!(
                "The token's algorithm '{}' is not accepted; accepted: {ACCEPTED}",
                truncate(&alg_text, QUOTE_MAX)
            ))
        })?;
        let fetcher = Fetcher {
            http: &self.http,
            clock: self.clock.as_ref(),
            issuer: &issuer.config.issuer,
        };
        issuer
            .keys
            .with_key(&fetcher, header.kid.as_deref(), alg, |key| {
                verify_signature(token, key, alg)
            })
            .await
    }
}

fn issuer_not_accepted(iss: &str) -> Error {
    refuse(format!(
        "The token's issuer '{}' is not accepted",
        truncate(iss, QUOTE_MAX)
    ))
}

/// The claims of a token whose signature `key` verifies.
fn verify_signature(
    token: &str,
    key: &DecodingKey,
    alg: Accepted,
) -> Result<PresentedClaims, Error> {
    // jsonwebtoken's time checks read the system clock: off, `check_claims` applies
    // the injected time.
    let mut validation = Validation::new(alg.algorithm());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    validation.leeway = 0;
    jsonwebtoken::decode::<PresentedClaims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => refuse("The token's signature is invalid"),
            ErrorKind::Json(_) => refuse("The token's claims are not well-formed"),
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => {
                refuse("The token's signing key, as published by its issuer, is not a valid key")
            }
            _ => refuse("The token is not a well-formed JWT"),
        })
}

fn check_claims(
    claims: PresentedClaims,
    config: &IssuerConfig,
    now: Timestamp,
) -> Result<VerifiedToken, Error> {
    let (expires, not_before) = claims.validity()?;
    check_validity(expires, not_before, now)?;
    let audiences = claims.audiences()?;
    if !audiences
        .iter()
        .any(|presented| config.audiences.iter().any(|a| same_audience(presented, a)))
    {
        return Err(refuse(format!(
            "The token's audience '{}' is not accepted",
            truncate(&audiences.join(" "), QUOTE_MAX)
        )));
    }
    let iss = claims
        .iss
        .as_deref()
        .ok_or_else(|| refuse("The token has no issuer (iss)"))?;
    if iss != config.issuer {
        return Err(issuer_not_accepted(iss));
    }
    Ok(VerifiedToken {
        principal: claims.into_principal(config.tenant_id.clone())?,
        expires,
        not_before,
        own_client: None,
    })
}

/// Audiences match exactly, except that a trailing slash does not matter.
fn same_audience(presented: &str, configured: &str) -> bool {
    presented.trim_end_matches('/') == configured.trim_end_matches('/')
}

#[cfg(test)]
mod tests;
