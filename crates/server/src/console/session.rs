//! Who is signed in to the console. The session cookie carries a random 256-bit secret;
//! the store keeps only its SHA-256 with the user, so that every replica knows the
//! session and signing out (or an expiry, idle or absolute) ends it everywhere. A
//! local user's account is read again on every request: a deleted user is signed out,
//! and changed groups apply at once. An external user (signed in through an issuer of
//! the config) keeps the groups of their ID token for the session's life, as long as
//! the config still offers that issuer for console sign-in.
//!
//! Every state-changing form carries a CSRF token derived from the session secret (a
//! one-way hash of it, so the page never shows the secret itself).

use std::time::Duration;

use appfence_core::authz::{Principal, DELEGATED_SCOPES};
use appfence_core::records::ConsoleSession;
use appfence_core::Error;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::oauth::secrets::sha256_hex;
use crate::AppState;

/// A session ends this long after sign-in, whatever happens.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// ... or this long after its last request.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// `last_seen` is written at most this often (a page view is not a write each time).
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Open sessions one user may hold; a sign-in beyond it is refused (bounded storage).
pub const MAX_SESSIONS_PER_USER: u64 = 32;
/// The issuer of local users' sessions.
pub const LOCAL_ISSUER: &str = "local";

/// `__Host-` (Secure, whole origin, no Domain) over HTTPS; browsers refuse that prefix
/// on plain HTTP, where the cookie is not `Secure` either.
pub(super) fn cookie_name(state: &AppState) -> &'static str {
    if secure(state) {
        "__Host-appfence-session"
    } else {
        "appfence-session"
    }
}

pub(super) fn secure(state: &AppState) -> bool {
    state.public_url().starts_with("https://")
}

/// The value of cookie `name` in the request, if any.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` over HTTPS.
pub(super) fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure(state) {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).expect("cookie values are base64url")
}

/// 256 random bits, base64url.
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The CSRF token of a session (or of a sign-in form's cookie).
pub(super) fn csrf_of(secret: &str) -> String {
    hex::encode(Sha256::digest(format!("appfence console csrf\0{secret}")))
}

/// The signed-in user of a console request.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub principal: Principal,
    pub upn: String,
    /// Put in every state-changing form; checked by [`Viewer::check_csrf`].
    pub csrf: String,
    /// A local user of the built-in issuer (not one of an external issuer).
    pub local: bool,
    session_sha256: String,
}

impl Viewer {
    /// The session's id (the SHA-256 of its secret).
    pub fn session_id(&self) -> &str {
        &self.session_sha256
    }

    /// `Forbidden` unless `presented` is this session's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), Error> {
        if bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "The form is out of date or did not come from this console (its CSRF token \
                 does not match your session). Reload the page and try again."
                    .into(),
            ))
        }
    }
}

/// Why there is no viewer: the caller goes to the sign-in page.
pub struct SignInFirst {
    next: String,
    api: bool,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        if self.api {
            // A live stream cannot follow a redirect to a form.
            return (StatusCode::UNAUTHORIZED, "Sign in first").into_response();
        }
        let target = format!("/console/sign-in?next={}", form_urlencoded(&self.next));
        Redirect::to(&target).into_response()
    }
}

pub(super) fn form_urlencoded(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .unwrap_or_default()
        .trim_start_matches('=')
        .to_string()
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let path = parts.uri.path();
        let refuse = || {
            SignInFirst {
                next: if parts.method == axum::http::Method::GET
                    && !path.starts_with("/console/live")
                {
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default()
                } else {
                    "/console/devices".to_string()
                },
                api: path.starts_with("/console/live"),
            }
            .into_response()
        };
        let Some(secret) = cookie(&parts.headers, cookie_name(state)) else {
            return Err(refuse());
        };
        match load(state, secret).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(refuse()),
            Err(e) => Err(super::error_page(None, &e)),
        }
    }
}

/// The viewer of the request's session cookie, if it names an open session.
pub async fn from_headers(state: &AppState, headers: &HeaderMap) -> Result<Option<Viewer>, Error> {
    match cookie(headers, cookie_name(state)) {
        Some(secret) => load(state, secret).await,
        None => Ok(None),
    }
}

/// The viewer of session `secret`, if it is open.
pub async fn load(state: &AppState, secret: &str) -> Result<Option<Viewer>, Error> {
    let hash = sha256_hex(secret);
    let Some(session) = state.store.console_session(&hash).await? else {
        return Ok(None);
    };
    let now = state.clock.now();
    if session.is_over(now, SESSION_IDLE) {
        return Ok(None);
    }
    let groups = if session.issuer == LOCAL_ISSUER {
        // Read on every request: a user disabled or deleted (and a session that raced
        // with that) is signed out at once.
        match state.store.user(&session.tenant_id, &session.upn).await? {
            Some(u) if u.object_id == session.user_object_id && u.disabled.is_none() => u.groups,
            _ => return Ok(None),
        }
    } else {
        // An external user's groups are those of their ID token at sign-in (the session
        // ends within SESSION_LIFETIME); the issuer must still offer console sign-in
        // for that tenant, so that removing it from the config ends its sessions.
        let still_offered = state.access.current().issuers.iter().any(|i| {
            i.issuer == session.issuer && i.tenant_id == session.tenant_id && i.console.is_some()
        });
        if !still_offered {
            return Ok(None);
        }
        session.groups.clone()
    };
    if now >= session.last_seen.plus(TOUCH_EVERY) {
        state.store.touch_console_session(&hash, now).await?;
    }
    Ok(Some(Viewer {
        principal: Principal::user(
            &session.tenant_id,
            &session.user_object_id,
            &session.upn,
            DELEGATED_SCOPES.iter().map(|s| s.to_string()).collect(),
            groups,
        ),
        upn: session.upn,
        csrf: csrf_of(secret),
        local: session.issuer == LOCAL_ISSUER,
        session_sha256: hash,
    }))
}

/// Who signs in.
pub struct NewSession {
    pub tenant_id: String,
    pub user_object_id: String,
    pub upn: String,
    pub groups: Vec<String>,
    pub issuer: String,
}

/// Opens a session; the answer's `Set-Cookie` carries it.
pub async fn open(state: &AppState, who: NewSession) -> Result<HeaderValue, Error> {
    let open = state
        .store
        .count_console_sessions_of_user(&who.tenant_id, &who.user_object_id)
        .await?;
    if open >= MAX_SESSIONS_PER_USER {
        return Err(Error::TooManyRequests {
            message: format!(
                "You have {open} open console sessions; sign out of one, or wait for them to expire"
            ),
            retry_after: SESSION_IDLE,
        });
    }
    let secret = random_token();
    let now = state.clock.now();
    let session = ConsoleSession {
        id_sha256: sha256_hex(&secret),
        tenant_id: who.tenant_id,
        user_object_id: who.user_object_id,
        upn: who.upn,
        groups: who.groups,
        issuer: who.issuer,
        created: now,
        last_seen: now,
        expires: now.plus(SESSION_LIFETIME),
    };
    state.store.insert_console_session(&session).await?;
    tracing::info!(user = %session.upn, tenant_id = %session.tenant_id, issuer = %session.issuer, "console sign-in");
    Ok(set_cookie(
        state,
        cookie_name(state),
        &secret,
        Some(SESSION_LIFETIME.as_secs()),
    ))
}

/// Ends the viewer's session everywhere; the answer's `Set-Cookie` clears the cookie.
pub async fn close(state: &AppState, viewer: &Viewer) -> Result<HeaderValue, Error> {
    state
        .store
        .delete_console_session(&viewer.session_sha256)
        .await?;
    tracing::info!(user = %viewer.upn, "console sign-out");
    Ok(set_cookie(state, cookie_name(state), "", Some(0)))
}
