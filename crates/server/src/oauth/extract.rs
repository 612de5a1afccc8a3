//! Authentication of API requests: `Authorization: Bearer <jwt>` into a [`Principal`].

use appfence_core::authz::Principal;
use appfence_core::ids::truncate;
use appfence_core::Error;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::audience::TokenPolicy;
use super::claims::unverified_issuer;
use super::verify::{verify_token, VerifiedToken, MAX_TOKEN_BYTES};
use crate::{ApiError, AppState};

/// The verified caller of a request. Use it as a handler argument; requests without a
/// valid token are answered 401 `Unauthorized` before the handler runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Behind the API gate the token was already verified; do not verify it twice.
        if let Some(done) = parts.extensions.get::<Authenticated>() {
            return Ok(done.clone());
        }
        authenticate(state, &parts.headers).await.map(Authenticated)
    }
}

/// Verifies the request's bearer token into the caller's [`Principal`].
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = bearer_token(headers)?;
    let now = state.clock.now();
    let cache = &state.verified_tokens;
    let verified = match cache.get(token) {
        Some(known) => {
            known.check_time(now)?;
            known
        }
        None => {
            let verified = verify_any_issuer(state, token, now).await?;
            cache.insert(token, verified.clone());
            verified
        }
    };
    let mut principal = verified.principal;
    // Signed by us, but the tenant must still exist: the cache makes this free for
    // every tenant seen before.
    if !state
        .tenants
        .exists(state.store.as_ref(), &principal.tenant_id)
        .await?
    {
        return Err(ApiError(Error::Unauthorized(format!(
            "The token's tenant '{}' does not exist",
            truncate(&principal.tenant_id, 100)
        ))));
    }
    // Our own tokens: their application and user must still be enabled (re-read
    // within `STATE_TTL`), and a user acts with their current groups.
    if let Some(client_id) = &verified.own_client {
        if let Some(groups) = state
            .principals
            .check(state.store.as_ref(), &principal, client_id, now)
            .await?
        {
            principal.groups = groups;
        }
    }
    Ok(principal)
}

/// Chooses the verifier by the (not yet trusted) `iss` claim: this server's own issuer,
/// or a configured external issuer. Anything else is refused before any key is used.
async fn verify_any_issuer(
    state: &AppState,
    token: &str,
    now: appfence_proto::Timestamp,
) -> Result<VerifiedToken, Error> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Error::Unauthorized("The token is too large".into()));
    }
    let policy = TokenPolicy::new(&state.public_url());
    match unverified_issuer(token)? {
        Some(iss) if state.external.knows(&iss) => state.external.verify(token, &iss).await,
        Some(iss) if !iss.starts_with(&format!("{}/", policy.public_url())) => {
            Err(Error::Unauthorized(format!(
                "The token's issuer '{}' is not accepted",
                truncate(&iss, 200)
            )))
        }
        _ => verify_own(state, &policy, token, now).await,
    }
}

/// A token of this server's issuer. A `kid` this replica does not know may be a key
/// another replica (or `appfence keys`) has just added: re-read the keys (rate
/// limited) and try once more.
async fn verify_own(
    state: &AppState,
    policy: &TokenPolicy,
    token: &str,
    now: appfence_proto::Timestamp,
) -> Result<VerifiedToken, Error> {
    let keys = state.keys.current();
    let unknown = super::claims::read_header(token)?
        .kid
        .is_some_and(|kid| !keys.knows(&kid));
    if unknown
        && state
            .keys
            .refresh_for_unknown_kid(state.store.as_ref(), now)
            .await?
    {
        state.verified_tokens.clear();
        return verify_token(&state.keys.current(), policy, token, now);
    }
    verify_token(&keys, policy, token, now)
}

/// The token of an `Authorization: Bearer` header (scheme in any case).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    let refuse = |m: &str| Error::Unauthorized(m.to_string());
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| refuse("Authorization header is missing"))?
        .to_str()
        .map_err(|_| refuse("Authorization header is not valid text"))?
        .trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(refuse("Authorization header must use the Bearer scheme"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(refuse("Authorization header has no token"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::audience::TokenVersion;
    use crate::oauth::tokens::issue_app_token;
    use crate::test_support::{test_state, TENANT};
    use appfence_core::authz::Caller;
    use appfence_core::{AppRegistration, Clock, Tenant};
    use axum::http::{HeaderValue, Request};
    use std::time::Duration;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn refused(r: Result<&str, Error>) -> String {
        match r {
            Err(Error::Unauthorized(m)) => m,
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(
            bearer_token(&headers("Bearer abc.def.ghi")).unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(bearer_token(&headers("bearer  abc ")).unwrap(), "abc");
        assert_eq!(bearer_token(&headers("BEARER abc")).unwrap(), "abc");
        assert_eq!(
            refused(bearer_token(&HeaderMap::new())),
            "Authorization header is missing"
        );
        assert_eq!(
            refused(bearer_token(&headers("Basic Zm9vOmJhcg=="))),
            "Authorization header must use the Bearer scheme"
        );
        assert_eq!(
            refused(bearer_token(&headers("Bearer"))),
            "Authorization header has no token"
        );
        assert_eq!(
            refused(bearer_token(&headers("Bearer   "))),
            "Authorization header has no token"
        );
        assert_eq!(
            refused(bearer_token(&headers("Bearerabc"))),
            "Authorization header must use the Bearer scheme"
        );
    }

    async fn extract(
        state: &AppState,
        authorization: Option<&str>,
    ) -> Result<Authenticated, ApiError> {
        let mut req = Request::builder().uri("/api/machines");
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        Authenticated::from_request_parts(&mut parts, state).await
    }

    fn app(tenant_id: &str) -> AppRegistration {
        AppRegistration {
            tenant_id: tenant_id.into(),
            client_id: "6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b".into(),
            display_name: "SOAR".into(),
            roles: vec!["Machine.Read.All".into()],
            created: appfence_proto::Timestamp::from_unix_seconds(1),
            disabled: None,
        }
    }

    #[tokio::test]
    async fn the_extractor_uses_the_injected_clock_and_checks_the_tenant() {
        let t = test_state().await;
        let (state, clock) = (t.state.clone(), t.clock.clone());
        state.store.insert_app(&app(TENANT), None).await.unwrap();
        let token = issue_app_token(
            &state,
            &app(TENANT),
            "https://api.security.microsoft.com/",
            TokenVersion::V1,
        )
        .unwrap();
        let Authenticated(p) = extract(&state, Some(&format!("Bearer {token}")))
            .await
            .unwrap();
        assert_eq!(p.tenant_id, TENANT);
        assert_eq!(
            p.caller,
            Caller::Application {
                client_id: "6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b".into(),
                display_name: "SOAR".into()
            }
        );
        assert_eq!(p.roles, vec!["Machine.Read.All".to_string()]);

        // The server's clock, not the system's, decides expiry.
        clock.advance(state.config.token_lifetime + Duration::from_secs(1));
        let err = extract(&state, Some(&format!("Bearer {token}")))
            .await
            .unwrap_err();
        assert_eq!(err.0, Error::Unauthorized("The token has expired".into()));

        // A token for a tenant that does not exist.
        let token = issue_app_token(
            &state,
            &app("11111111-2222-3333-4444-555555555555"),
            "https://api.security.microsoft.com",
            TokenVersion::V2,
        )
        .unwrap();
        let err = extract(&state, Some(&format!("Bearer {token}")))
            .await
            .unwrap_err();
        assert_eq!(
            err.0,
            Error::Unauthorized(
                "The token's tenant '11111111-2222-3333-4444-555555555555' does not exist".into()
            )
        );
        // Which is found once the tenant is created.
        state
            .store
            .ensure_tenant(&Tenant {
                id: "11111111-2222-3333-4444-555555555555".into(),
                name: "late".into(),
            })
            .await
            .unwrap();
        state
            .store
            .insert_app(&app("11111111-2222-3333-4444-555555555555"), None)
            .await
            .unwrap();
        assert!(extract(&state, Some(&format!("Bearer {token}")))
            .await
            .is_ok());

        let err = extract(&state, None).await.unwrap_err();
        assert_eq!(
            err.0,
            Error::Unauthorized("Authorization header is missing".into())
        );
    }

    #[tokio::test]
    async fn a_disabled_applications_tokens_are_refused_within_the_bound() {
        use crate::oauth::principal_state::STATE_TTL;
        let t = test_state().await;
        let (state, clock) = (t.state.clone(), t.clock.clone());
        let app = app(TENANT);
        state.store.insert_app(&app, None).await.unwrap();
        let token = issue_app_token(
            &state,
            &app,
            "https://api.security.microsoft.com",
            TokenVersion::V2,
        )
        .unwrap();
        let bearer = format!("Bearer {token}");
        assert!(extract(&state, Some(&bearer)).await.is_ok());
        state
            .store
            .set_app_disabled(TENANT, &app.client_id, true, "test", clock.now())
            .await
            .unwrap();
        // Still answered from the cache, until the bound.
        clock.advance(STATE_TTL - Duration::from_millis(1));
        assert!(extract(&state, Some(&bearer)).await.is_ok());
        clock.advance(Duration::from_millis(1));
        let err = extract(&state, Some(&bearer)).await.unwrap_err();
        assert_eq!(
            err.0,
            Error::Unauthorized(format!(
                "The token's application '{}' is disabled",
                app.client_id
            ))
        );
        // Enabled again: accepted again within the bound.
        state
            .store
            .set_app_disabled(TENANT, &app.client_id, false, "test", clock.now())
            .await
            .unwrap();
        clock.advance(STATE_TTL);
        assert!(extract(&state, Some(&bearer)).await.is_ok());
    }
}
