//! The authorization endpoint (RFC 6749 §4.1.1, RFC 7636): `GET
//! /{tenant}/oauth2/v2.0/authorize` (and the v1 path). A request whose client or
//! redirect URI cannot be trusted gets an HTML error page, never a redirect; any other
//! error goes back to the redirect URI with `error`, `error_description` and `state`.
//! Without a console session the browser signs in first and comes back.

use std::collections::HashMap;

use appfence_core::grants::{kind, status, OAuthGrant};
use appfence_core::ids::truncate;
use appfence_core::Error;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{find_client, new_family, requested_scopes, Detail, CODE_LIFETIME};
use crate::oauth::audience::{TokenPolicy, TokenVersion};
use crate::oauth::secrets::{generate_secret, sha256_hex};
use crate::oauth::tenants::resolve_tenant;
use crate::AppState;

pub async fn authorize_v2(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    authorize(&state, &tenant, query, &headers, TokenVersion::V2).await
}

pub async fn authorize_v1(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    authorize(&state, &tenant, query, &headers, TokenVersion::V1).await
}

/// An error shown to the person (the redirect URI is not trusted).
fn page(status: StatusCode, message: String) -> Response {
    let e = match status {
        StatusCode::NOT_FOUND => Error::ResourceNotFound(message),
        s if s.is_server_error() => Error::internal(message),
        _ => Error::BadRequest(message),
    };
    let mut resp = crate::console::error_page(None, &e);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A 303 to `uri` with `params` added to its query.
fn redirect_with(uri: &str, params: &[(&str, &str)]) -> Response {
    let query = serde_urlencoded::to_string(params).unwrap_or_default();
    let sep = if uri.contains('?') { '&' } else { '?' };
    let target = format!("{uri}{sep}{query}");
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn authorize(
    state: &AppState,
    tenant: &str,
    query: Option<String>,
    headers: &HeaderMap,
    version: TokenVersion,
) -> Response {
    let query = query.unwrap_or_default();
    let params: HashMap<String, String> =
        match serde_urlencoded::from_str::<Vec<(String, String)>>(&query) {
            Ok(pairs) => pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
            Err(_) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "The sign-in request's query string is not valid.".into(),
                )
            }
        };
    let get = |name: &str| params.get(name).map(String::as_str);

    // What decides whether the redirect URI can be trusted: the tenant, the client and
    // the redirect URI itself. Errors here are pages.
    let tenant = match resolve_tenant(state.store.as_ref(), tenant).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return page(
                StatusCode::BAD_REQUEST,
                format!("Tenant '{}' not found.", truncate(tenant, 100)),
            )
        }
        Err(e) => return page(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let Some(client_id) = get("client_id") else {
        return page(
            StatusCode::BAD_REQUEST,
            "The sign-in request names no client (parameter 'client_id' is missing).".into(),
        );
    };
    let client = match find_client(state, &tenant.id, client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return page(
                StatusCode::BAD_REQUEST,
                format!(
                    "The application '{}' is not registered in this tenant (unauthorized_client).",
                    truncate(client_id, 100)
                ),
            )
        }
        Err(e) => return page(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return page(
            StatusCode::BAD_REQUEST,
            "The sign-in request names no redirect URI (parameter 'redirect_uri' is missing)."
                .into(),
        );
    };
    if !client.allows_redirect(redirect_uri) {
        tracing::info!(client_id = %client.app.client_id, redirect_uri = %truncate(redirect_uri, 200), "authorize: unregistered redirect URI");
        return page(
            StatusCode::BAD_REQUEST,
            format!(
                "The redirect URI '{}' is not registered for the application '{}' \
                 (register it with `appfence app create --redirect-uri`). You were not \
                 sent there.",
                truncate(redirect_uri, 200),
                client.app.display_name
            ),
        );
    }

    // From here on, errors go back to the client.
    let state_param = get("state").unwrap_or_default().to_string();
    let fail = |error: &str, description: &str| {
        let mut p = vec![("error", error), ("error_description", description)];
        if !state_param.is_empty() {
            p.push(("state", &state_param));
        }
        redirect_with(redirect_uri, &p)
    };
    match get("response_type") {
        Some("code") => {}
        Some(other) => {
            return fail(
                "unsupported_response_type",
                &format!(
                    "The response type '{}' is not supported; use 'code'",
                    truncate(other, 50)
                ),
            )
        }
        None => return fail("invalid_request", "Parameter 'response_type' is missing"),
    }
    if let Some(mode) = get("response_mode") {
        if mode != "query" {
            return fail(
                "invalid_request",
                &format!(
                    "The response mode '{}' is not supported; use 'query'",
                    truncate(mode, 50)
                ),
            );
        }
    }
    let Some(challenge) = get("code_challenge") else {
        return fail(
            "invalid_request",
            "PKCE is required: parameter 'code_challenge' is missing (RFC 7636, method S256)",
        );
    };
    if get("code_challenge_method") != Some("S256") {
        return fail(
            "invalid_request",
            "The code challenge method must be 'S256' (RFC 7636); 'plain' is not accepted",
        );
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail(
            "invalid_request",
            "The code challenge must be BASE64URL(SHA-256(code_verifier)): 43 characters",
        );
    }
    let policy = TokenPolicy::new(&state.public_url());
    let (audience, scopes) = match requested_scopes(&policy, version, get("scope"), get("resource"))
    {
        Ok(s) => s,
        Err(f) => return fail(f.error, &f.description),
    };

    // The person: the console's session, or a sign-in first.
    let viewer = match crate::console::signed_in(state, headers).await {
        Ok(v) => v,
        Err(e) => return fail("temporarily_unavailable", &e.to_string()),
    };
    let viewer = match viewer {
        Some(v) if v.principal.tenant_id == tenant.id => v,
        _ => {
            if get("prompt") == Some("none") {
                return fail("login_required", "The user is not signed in");
            }
            let here = match version {
                TokenVersion::V1 => format!("/{}/oauth2/authorize?{query}", tenant.id),
                TokenVersion::V2 => format!("/{}/oauth2/v2.0/authorize?{query}", tenant.id),
            };
            let next = serde_urlencoded::to_string([("next", here)]).unwrap_or_default();
            return (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, format!("/console/sign-in?{next}"))],
            )
                .into_response();
        }
    };
    let (oid, upn) = match &viewer.principal.caller {
        appfence_core::authz::Caller::User { object_id, .. } => {
            (object_id.clone(), viewer.upn.clone())
        }
        _ => return fail("access_denied", "Only people sign in here"),
    };

    let code = generate_secret();
    let now = state.clock.now();
    let detail = Detail {
        redirect_uri: Some(redirect_uri.to_string()),
        code_challenge: Some(challenge.to_string()),
        nonce: get("nonce").map(|n| truncate(n, 512).to_string()),
        audience,
        scopes,
        version: version.claim().to_string(),
        local: viewer.local,
        groups: if viewer.local {
            Vec::new()
        } else {
            viewer.principal.groups.clone()
        },
    };
    let grant = OAuthGrant {
        id_sha256: sha256_hex(&code),
        kind: kind::CODE.into(),
        tenant_id: tenant.id.clone(),
        client_id: client.app.client_id.clone(),
        family: new_family(),
        user_code_sha256: None,
        user_object_id: Some(oid),
        upn: Some(upn),
        status: status::ACTIVE.into(),
        detail: serde_json::to_string(&detail).unwrap_or_default(),
        created: now,
        expires: now.plus(CODE_LIFETIME),
        last_poll: None,
        poll_interval: None,
    };
    if let Err(e) = state.store.insert_oauth_grant(&grant).await {
        tracing::warn!(error = %e, "authorize: cannot store a code");
        return fail(
            "temporarily_unavailable",
            "The server cannot issue a code now; try again",
        );
    }
    tracing::info!(tenant_id = %tenant.id, client_id = %client.app.client_id, user = %viewer.upn, "authorization code issued");
    let mut p = vec![("code", code.as_str())];
    if !state_param.is_empty() {
        p.push(("state", &state_param));
    }
    redirect_with(redirect_uri, &p)
}
