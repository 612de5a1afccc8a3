//! The device authorization endpoint (RFC 8628 §3.1-3.2): `POST
//! /{tenant}/oauth2/v2.0/devicecode`, for public clients. The person enters the user
//! code on the console's page `/console/device`, signed in, and approves or denies.

use appfence_core::grants::{kind, status, OAuthGrant};
use appfence_core::Error;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Serialize;

use super::{
    find_client, new_family, requested_scopes, Detail, DEVICE_CODE_LIFETIME, DEVICE_INTERVAL,
};
use crate::oauth::audience::{TokenPolicy, TokenVersion};
use crate::oauth::failure::{json_bytes, no_store, OAuthFailure};
use crate::oauth::request::{client_auth, parse_params, SecretRequired};
use crate::oauth::secrets::{generate_secret, sha256_hex};
use crate::oauth::tenants::resolve_tenant;
use crate::AppState;

/// Letters of user codes: consonants only (no vowels, so no words; no 0/O, 1/I
/// confusion), as RFC 8628 §6.1 suggests. 8 of them: 20^8 ≈ 2^34.6 codes.
const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LETTERS: usize = 8;

/// A fresh user code, `XXXX-XXXX`.
pub fn new_user_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let letters: String = (0..USER_CODE_LETTERS)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

/// A typed user code in canonical form (upper case, letters of the alphabet only), or
/// `None` if it cannot be one.
pub fn normalise_user_code(typed: &str) -> Option<String> {
    let letters: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (letters.len() == USER_CODE_LETTERS && letters.bytes().all(|b| ALPHABET.contains(&b)))
        .then_some(letters)
}

pub fn user_code_hash(canonical: &str) -> String {
    sha256_hex(&format!("appfence user code\0{canonical}"))
}

#[derive(Serialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: String,
    expires_in: u64,
    interval: u64,
    message: String,
}

pub async fn devicecode_v2(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match start(&state, &tenant, &headers, &body, TokenVersion::V2).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

pub async fn devicecode_v1(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match start(&state, &tenant, &headers, &body, TokenVersion::V1).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn start(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
    version: TokenVersion,
) -> Result<Response, OAuthFailure> {
    let tenant = resolve_tenant(state.store.as_ref(), tenant)
        .await?
        .ok_or_else(|| {
            OAuthFailure::invalid_request(format!(
                "Tenant '{}' not found",
                appfence_core::ids::truncate(tenant, 100)
            ))
        })?;
    let params = parse_params(body, None)?;
    let auth = client_auth(
        &params,
        headers.get(axum::http::header::AUTHORIZATION),
        SecretRequired::No,
    )?;
    let client = find_client(state, &tenant.id, &auth.client_id)
        .await?
        .ok_or_else(|| {
            OAuthFailure::invalid_client(
                format!(
                    "The client '{}' is not registered in this tenant",
                    appfence_core::ids::truncate(&auth.client_id, 100)
                ),
                auth.basic_auth,
            )
        })?;
    if !client.public {
        return Err(OAuthFailure {
            error: "unauthorized_client",
            ..OAuthFailure::invalid_request(
                "The device code flow is for public clients: register the application with `--public`",
            )
        });
    }
    if auth.client_secret.is_some() {
        return Err(OAuthFailure::invalid_client(
            "The client is a public client: it must not present a client secret",
            auth.basic_auth,
        ));
    }
    let policy = TokenPolicy::new(&state.public_url());
    let (audience, scopes) = requested_scopes(
        &policy,
        version,
        params.get("scope").map(String::as_str),
        params.get("resource").map(String::as_str),
    )?;
    let device_code = generate_secret();
    let now = state.clock.now();
    let detail = Detail {
        audience,
        scopes,
        version: version.claim().to_string(),
        local: true,
        ..Detail::default()
    };
    // A user code already in use (a chance in 2^34 per code alive) gets another.
    let mut user_code = new_user_code();
    for attempt in 0..3 {
        let grant = OAuthGrant {
            id_sha256: sha256_hex(&device_code),
            kind: kind::DEVICE.into(),
            tenant_id: tenant.id.clone(),
            client_id: client.app.client_id.clone(),
            family: new_family(),
            user_code_sha256: Some(user_code_hash(
                &normalise_user_code(&user_code).unwrap_or_default(),
            )),
            user_object_id: None,
            upn: None,
            status: status::PENDING.into(),
            detail: serde_json::to_string(&detail).unwrap_or_default(),
            created: now,
            expires: now.plus(DEVICE_CODE_LIFETIME),
            last_poll: None,
            poll_interval: None,
        };
        match state.store.insert_oauth_grant(&grant).await {
            Ok(()) => break,
            Err(e) if attempt == 2 => return Err(e.into()),
            Err(_) => user_code = new_user_code(),
        }
    }
    let verification_uri = format!("{}/console/device", policy.public_url());
    let body = DeviceAuthorization {
        verification_uri_complete: format!("{verification_uri}?user_code={user_code}"),
        message: format!(
            "To sign in, open {verification_uri} in a browser and enter the code {user_code} to authenticate."
        ),
        device_code,
        user_code,
        verification_uri,
        expires_in: DEVICE_CODE_LIFETIME.as_secs(),
        interval: DEVICE_INTERVAL.as_secs(),
    };
    tracing::info!(tenant_id = %tenant.id, client_id = %client.app.client_id, "device code issued");
    let mut resp = (StatusCode::OK, json_bytes(&body)).into_response();
    no_store(resp.headers_mut());
    Ok(resp)
}

/// A device sign-in waiting for its user, found by the user code.
pub struct Pending {
    pub grant: OAuthGrant,
    pub client_name: String,
}

/// Why a user code leads nowhere (each counts as a failed guess).
pub fn unknown_code() -> Error {
    Error::BadRequest(
        "That code is not valid: it is unknown, expired or already used. Check the code \
         your device shows, or start the sign-in there again."
            .into(),
    )
}

/// The pending device sign-in of `typed` in the tenant, if any.
pub async fn pending(
    state: &AppState,
    tenant_id: &str,
    typed: &str,
) -> Result<Option<Pending>, Error> {
    let Some(canonical) = normalise_user_code(typed) else {
        return Ok(None);
    };
    let Some(grant) = state
        .store
        .oauth_grant_by_user_code(&user_code_hash(&canonical))
        .await?
    else {
        return Ok(None);
    };
    if grant.kind != kind::DEVICE
        || grant.tenant_id != tenant_id
        || grant.status != status::PENDING
        || grant.expires <= state.clock.now()
    {
        return Ok(None);
    }
    let client_name = find_client(state, tenant_id, &grant.client_id)
        .await?
        .map(|c| c.app.display_name)
        .unwrap_or_else(|| grant.client_id.clone());
    Ok(Some(Pending { grant, client_name }))
}

/// Approves (for the user) or denies the pending sign-in; false if it is no longer
/// pending.
pub async fn decide(
    state: &AppState,
    grant: &OAuthGrant,
    approve: bool,
    user: (&str, &str),
) -> Result<bool, Error> {
    let to = if approve {
        status::APPROVED
    } else {
        status::DENIED
    };
    state
        .store
        .set_oauth_grant_status(&grant.id_sha256, status::PENDING, to, Some(user))
        .await
}
