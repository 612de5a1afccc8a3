//! The token endpoint's grants of the sign-in flows: `authorization_code` (with the
//! PKCE verifier), `refresh_token` (rotated on use) and the device code
//! (`urn:ietf:params:oauth:grant-type:device_code`, polled).

use std::collections::HashMap;
use std::net::IpAddr;

use appfence_core::grants::{kind, status, OAuthGrant};
use appfence_core::records::UserRecord;
use appfence_core::Tenant;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{find_client, Client, Detail, DEVICE_INTERVAL, REFRESH_LIFETIME};
use crate::oauth::audience::{TokenPolicy, TokenVersion};
use crate::oauth::failure::{json_bytes, no_store, OAuthFailure};
use crate::oauth::request::{client_auth, ClientAuth, Grant, SecretRequired, TokenRequest};
use crate::oauth::secrets::{generate_secret, sha256_hex};
use crate::oauth::sign_in::sign_in;
use crate::oauth::tokens::issue_user_token;
use crate::AppState;

/// What each `slow_down` adds to a device client's polling interval (RFC 8628 §3.5).
const SLOW_DOWN_STEP_SECS: u64 = 5;
/// The interval stops growing here: a slow client still completes within the code's life.
const MAX_POLL_INTERVAL_SECS: u64 = 60;

pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Whether this module answers `grant_type`.
pub fn handles(grant_type: Option<&str>) -> bool {
    matches!(
        grant_type,
        Some("authorization_code" | "refresh_token" | DEVICE_CODE_GRANT)
    )
}

/// The token endpoint's answer: RFC 6749 §5.1, with Entra's `ext_expires_in`.
#[derive(Serialize)]
struct FlowTokens {
    token_type: &'static str,
    scope: String,
    expires_in: u64,
    ext_expires_in: u64,
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

fn with_error(error: &'static str, description: impl Into<String>) -> OAuthFailure {
    OAuthFailure {
        error,
        ..OAuthFailure::invalid_grant(description)
    }
}

pub async fn redeem(
    state: &AppState,
    tenant: &Tenant,
    params: &HashMap<String, String>,
    authorization: Option<&HeaderValue>,
    version: TokenVersion,
    address: IpAddr,
) -> Result<Response, OAuthFailure> {
    let grant_type = params.get("grant_type").map(String::as_str);
    let auth = client_auth(params, authorization, SecretRequired::No)?;
    let client = authenticate(state, tenant, &auth, address).await?;
    let now = state.clock.now();
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| OAuthFailure::missing(name))
    };
    let (grant, detail) = match grant_type {
        Some("authorization_code") => {
            let code = param("code")?;
            let (grant, detail) = find(
                state,
                tenant,
                &client,
                kind::CODE,
                code,
                "authorization code",
            )
            .await?;
            if grant.status != status::ACTIVE {
                return Err(replayed(state, &grant, "authorization code").await);
            }
            if grant.expires <= now {
                return Err(OAuthFailure::invalid_grant(
                    "The authorization code has expired (codes are valid for 60 seconds); sign in again",
                ));
            }
            let redirect_uri = param("redirect_uri")?;
            if detail.redirect_uri.as_deref() != Some(redirect_uri) {
                return Err(OAuthFailure::invalid_grant(
                    "The redirect_uri differs from the one of the authorization request",
                ));
            }
            let verifier = param("code_verifier")?;
            if !pkce_matches(
                verifier,
                detail.code_challenge.as_deref().unwrap_or_default(),
            ) {
                return Err(OAuthFailure::invalid_grant(
                    "The code_verifier does not match the code_challenge of the authorization request (PKCE, S256)",
                ));
            }
            if !state
                .store
                .set_oauth_grant_status(&grant.id_sha256, status::ACTIVE, status::USED, None)
                .await?
            {
                return Err(replayed(state, &grant, "authorization code").await);
            }
            (grant, detail)
        }
        Some("refresh_token") => {
            let token = param("refresh_token")?;
            let (grant, detail) = find(
                state,
                tenant,
                &client,
                kind::REFRESH,
                token,
                "refresh token",
            )
            .await?;
            if grant.status != status::ACTIVE {
                return Err(replayed(state, &grant, "refresh token").await);
            }
            if grant.expires <= now {
                return Err(OAuthFailure::invalid_grant(
                    "The refresh token has expired; sign in again",
                ));
            }
            if !state
                .store
                .set_oauth_grant_status(&grant.id_sha256, status::ACTIVE, status::USED, None)
                .await?
            {
                return Err(replayed(state, &grant, "refresh token").await);
            }
            (grant, detail)
        }
        _ => {
            let code = param("device_code")?;
            let (grant, detail) =
                find(state, tenant, &client, kind::DEVICE, code, "device code").await?;
            if grant.status == status::USED || grant.status == status::REVOKED {
                return Err(replayed(state, &grant, "device code").await);
            }
            if grant.expires <= now {
                return Err(with_error(
                    "expired_token",
                    "The device code has expired; start the sign-in again",
                ));
            }
            match grant.status.as_str() {
                status::DENIED => {
                    return Err(with_error(
                        "access_denied",
                        "The user denied the sign-in request",
                    ))
                }
                status::PENDING => {
                    // RFC 8628 §3.5: each `slow_down` adds 5 s to the interval, for this
                    // and every later poll (up to a minute).
                    let interval = grant
                        .poll_interval
                        .map_or(DEVICE_INTERVAL.as_secs(), u64::from);
                    let too_soon = grant.last_poll.is_some_and(|last| {
                        now < last.plus(std::time::Duration::from_secs(interval))
                    });
                    let keep = if too_soon {
                        (interval + SLOW_DOWN_STEP_SECS).min(MAX_POLL_INTERVAL_SECS)
                    } else {
                        interval
                    };
                    let recorded = state
                        .store
                        .record_oauth_poll(&grant.id_sha256, grant.last_poll, now, keep as u32)
                        .await?;
                    return Err(if too_soon || !recorded {
                        with_error(
                            "slow_down",
                            format!(
                                "Polling too fast: wait at least {keep} seconds between requests"
                            ),
                        )
                    } else {
                        with_error(
                            "authorization_pending",
                            "The user has not yet approved the sign-in request",
                        )
                    });
                }
                _ => {}
            }
            if !state
                .store
                .set_oauth_grant_status(&grant.id_sha256, status::APPROVED, status::USED, None)
                .await?
            {
                return Err(replayed(state, &grant, "device code").await);
            }
            (grant, detail)
        }
    };
    let user = match the_user(state, &grant, &detail).await? {
        Some(u) => u,
        None => {
            state.store.revoke_oauth_family(&grant.family).await?;
            return Err(OAuthFailure::invalid_grant(
                "The user no longer exists or is disabled; nothing was issued",
            ));
        }
    };
    respond(state, &client, &grant, &detail, &user, version).await
}

/// The client: public clients present no secret; confidential ones authenticate as at
/// the client credentials grant (same limits and failure counting).
async fn authenticate(
    state: &AppState,
    tenant: &Tenant,
    auth: &ClientAuth,
    address: IpAddr,
) -> Result<Client, OAuthFailure> {
    let client = find_client(state, &tenant.id, &auth.client_id).await?;
    match client {
        None => Err(OAuthFailure::invalid_client(
            format!(
                "The client '{}' is not registered in this tenant",
                appfence_core::ids::truncate(&auth.client_id, 100)
            ),
            auth.basic_auth,
        )),
        Some(c) if c.public => {
            if auth.client_secret.is_some() {
                return Err(OAuthFailure::invalid_client(
                    "The client is a public client: it must not present a client secret",
                    auth.basic_auth,
                ));
            }
            Ok(c)
        }
        Some(c) => {
            if auth.client_secret.is_none() {
                return Err(OAuthFailure::invalid_client(
                    "The client is confidential: authenticate it with its client secret",
                    false,
                ));
            }
            let request = TokenRequest {
                grant: Grant::ClientCredentials,
                client: auth.clone(),
                audience: String::new(),
            };
            sign_in(state, tenant, address, &request).await?;
            Ok(c)
        }
    }
}

/// The grant of this kind the secret names, issued to this client in this tenant.
async fn find(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    kind: &str,
    secret: &str,
    what: &str,
) -> Result<(OAuthGrant, Detail), OAuthFailure> {
    let grant = state
        .store
        .oauth_grant(&sha256_hex(secret))
        .await?
        .filter(|g| g.kind == kind && g.tenant_id == tenant.id)
        .ok_or_else(|| OAuthFailure::invalid_grant(format!("The {what} is not valid")))?;
    if !grant.client_id.eq_ignore_ascii_case(&client.app.client_id) {
        return Err(OAuthFailure::invalid_grant(format!(
            "The {what} was issued to another client"
        )));
    }
    let detail: Detail = serde_json::from_str(&grant.detail)
        .map_err(|e| OAuthFailure::server_error(format!("a stored grant's detail: {e}")))?;
    Ok((grant, detail))
}

/// A code or token presented after its use: everything of its sign-in is revoked.
async fn replayed(state: &AppState, grant: &OAuthGrant, what: &str) -> OAuthFailure {
    if grant.status == status::REVOKED {
        return OAuthFailure::invalid_grant(format!("The {what} was revoked; sign in again"));
    }
    match state.store.revoke_oauth_family(&grant.family).await {
        Ok(n) => {
            tracing::warn!(tenant_id = %grant.tenant_id, client_id = %grant.client_id, user = ?grant.upn, revoked = n, "a used {what} was presented again: its sign-in is revoked");
            metrics::counter!("appfence_token_requests_refused_total", "reason" => "replay")
                .increment(1);
        }
        Err(e) => return e.into(),
    }
    OAuthFailure::invalid_grant(format!(
        "The {what} was already used; every token of this sign-in is now revoked. Sign in again"
    ))
}

/// BASE64URL(SHA-256(verifier)) == challenge, in constant time (RFC 7636 §4.6).
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let ok_len = (43..=128).contains(&verifier.len());
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    ok_len && !challenge.is_empty() && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// The user now: a local user read again (deleted, replaced or disabled: none); an
/// external user as at sign-in.
async fn the_user(
    state: &AppState,
    grant: &OAuthGrant,
    detail: &Detail,
) -> Result<Option<UserRecord>, OAuthFailure> {
    let (Some(oid), Some(upn)) = (&grant.user_object_id, &grant.upn) else {
        return Ok(None);
    };
    if detail.local {
        let user = state.store.user(&grant.tenant_id, upn).await?;
        // A disabled user gets nothing more from an earlier sign-in.
        Ok(user.filter(|u| &u.object_id == oid && u.disabled.is_none()))
    } else {
        Ok(Some(UserRecord {
            tenant_id: grant.tenant_id.clone(),
            object_id: oid.clone(),
            upn: upn.clone(),
            password_hash: String::new(),
            groups: detail.groups.clone(),
            created: grant.created,
            disabled: None,
        }))
    }
}

/// Tokens for the user: an access token, a rotated refresh token (`offline_access`,
/// local users) in the same family, an ID token (`openid`).
async fn respond(
    state: &AppState,
    client: &Client,
    grant: &OAuthGrant,
    detail: &Detail,
    user: &UserRecord,
    _endpoint: TokenVersion,
) -> Result<Response, OAuthFailure> {
    let version = detail.version();
    let access_token = issue_user_token(state, &client.app, user, &detail.audience, version)?;
    let now = state.clock.now();
    let refresh_token = if detail.wants("offline_access") && detail.local {
        let token = generate_secret();
        let next = OAuthGrant {
            id_sha256: sha256_hex(&token),
            kind: kind::REFRESH.into(),
            status: status::ACTIVE.into(),
            user_code_sha256: None,
            created: now,
            expires: now.plus(REFRESH_LIFETIME),
            last_poll: None,
            poll_interval: None,
            detail: serde_json::to_string(&Detail {
                redirect_uri: None,
                code_challenge: None,
                ..detail.clone()
            })
            .unwrap_or_default(),
            ..grant.clone()
        };
        state.store.insert_oauth_grant(&next).await?;
        Some(token)
    } else {
        None
    };
    let id_token = if detail.wants("openid") {
        Some(id_token(state, client, user, detail, version)?)
    } else {
        None
    };
    tracing::info!(tenant_id = %grant.tenant_id, client_id = %client.app.client_id, user_id = %user.object_id, grant = %grant.kind, "issued a user token");
    let lifetime = state.config.token_lifetime.as_secs();
    let mut scope = vec![format!("{}/.default", detail.audience)];
    scope.extend(detail.scopes.iter().cloned());
    let body = FlowTokens {
        token_type: "Bearer",
        scope: scope.join(" "),
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token,
        refresh_token,
        id_token,
    };
    let mut resp = (StatusCode::OK, json_bytes(&body)).into_response();
    no_store(resp.headers_mut());
    Ok(resp)
}

#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: String,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    nbf: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    oid: &'a str,
    tid: &'a str,
    preferred_username: &'a str,
    name: &'a str,
    ver: &'static str,
}

/// An OpenID Connect ID token (Core §2) for the client, signed like access tokens.
fn id_token(
    state: &AppState,
    client: &Client,
    user: &UserRecord,
    detail: &Detail,
    version: TokenVersion,
) -> Result<String, OAuthFailure> {
    let now = state.clock.now();
    let policy = TokenPolicy::new(&state.public_url());
    let iat = now.unix_seconds();
    let claims = IdTokenClaims {
        iss: policy.issuer(&user.tenant_id, version),
        sub: &user.object_id,
        aud: &client.app.client_id,
        exp: iat + state.config.token_lifetime.as_secs() as i64,
        iat,
        nbf: iat,
        nonce: detail.nonce.as_deref(),
        oid: &user.object_id,
        tid: &user.tenant_id,
        preferred_username: &user.upn,
        name: &user.upn,
        ver: version.claim(),
    };
    let keys = state.keys.current();
    let (kid, key) = keys
        .signer(now)
        .ok_or_else(|| OAuthFailure::server_error("no signing key can sign now"))?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, key)
        .map_err(|e| OAuthFailure::server_error(format!("cannot sign an ID token: {e}")))
}
