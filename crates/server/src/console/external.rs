//! Signing in to the console through an external OpenID Connect issuer configured with
//! a console client (`console_client_id`): the authorization code flow with PKCE (S256),
//! `state` and `nonce`.
//!
//! `GET /console/sign-in/external/{n}` keeps a fresh state, nonce and PKCE verifier in
//! a short-lived cookie (HttpOnly, SameSite=Lax, Secure over HTTPS) bound to the issuer
//! and the page to return to, and sends the browser to the issuer. The issuer sends it
//! back to `GET /console/sign-in/callback`, where the state must be the cookie's (the
//! cookie is cleared whatever happens), the code is redeemed with the verifier, and the
//! ID token is verified with the issuer's published keys, for the console's client and
//! with the cookie's nonce. The session then carries the token's user and groups.
//!
//! A failure shows the sign-in page saying what went wrong; a forged or stale answer, a
//! refused code or ID token counts against the address's sign-in limit as a wrong
//! password does. Neither the code nor any secret is ever logged or shown.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::layout::Notice;
use super::session::{self, cookie, random_token, secure, set_cookie, NewSession};
use super::sign_in::{render, safe_next, SignInForm};
use crate::access::{ConsoleClient, IssuerConfig};
use crate::client_address::client_ip;
use crate::oauth::external::{CodeRedemption, RedeemError};
use crate::AppState;

/// How long a browser may take at the identity provider.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Where the issuer sends the browser back, below the public URL.
pub const CALLBACK_PATH: &str = "/console/sign-in/callback";

fn flow_cookie_name(state: &AppState) -> &'static str {
    if secure(state) {
        "__Host-appfence-oidc"
    } else {
        "appfence-oidc"
    }
}

/// A sign-in in progress, kept in the browser's cookie (base64url JSON). Its secrets
/// (state, nonce, verifier) are this browser's own: they prove that the answer comes
/// back to the browser that asked, and for the request it made.
#[derive(Serialize, Deserialize)]
struct Flow {
    /// The issuer URL (an index could name another issuer after a reload).
    iss: String,
    next: String,
    state: String,
    nonce: String,
    verifier: String,
    /// Unix seconds.
    started: i64,
}

impl Flow {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a flow serializes"))
    }

    fn decode(value: &str) -> Option<Flow> {
        if value.len() > 4096 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The PKCE challenge of `verifier` (RFC 7636 §4.2, S256).
fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn redirect_uri(state: &AppState) -> String {
    format!("{}{CALLBACK_PATH}", state.public_url())
}

/// The issuer and its console client, if `iss` is configured with one.
fn console_issuer(state: &AppState, iss: &str) -> Option<(IssuerConfig, ConsoleClient)> {
    let policy = state.access.current();
    let issuer = policy.issuers.iter().find(|i| i.issuer == iss)?;
    let client = issuer.console.clone()?;
    Some((issuer.clone(), client))
}

#[derive(Deserialize, Default)]
pub struct StartQuery {
    #[serde(default)]
    next: Option<String>,
}

/// The sign-in page with an error.
async fn refuse(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    message: String,
    next: &str,
) -> Response {
    render(
        state,
        headers,
        status,
        Some(Notice::Error(message)),
        &SignInForm::returning_to(next),
    )
    .await
}

/// `GET /console/sign-in/external/{n}`: off to issuer `n` (its place in the config).
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(n): Path<String>,
    query: Result<Query<StartQuery>, QueryRejection>,
) -> Response {
    let next = safe_next(
        query
            .as_ref()
            .ok()
            .and_then(|q| q.next.as_deref())
            .unwrap_or_default(),
    )
    .to_string();
    let policy = state.access.current();
    let chosen = n
        .parse::<usize>()
        .ok()
        .and_then(|n| policy.issuers.get(n))
        .and_then(|i| i.console.as_ref().map(|c| (i.issuer.clone(), c.clone())));
    let Some((iss, client)) = chosen else {
        return refuse(
            &state,
            &headers,
            StatusCode::NOT_FOUND,
            "There is no such way to sign in (the configuration may have changed): choose \
             one below."
                .into(),
            &next,
        )
        .await;
    };
    let endpoints = match state.external.endpoints(&iss).await {
        Ok(e) => e,
        Err(error) => {
            tracing::warn!(issuer = %iss, %error, "console sign-in: cannot read the issuer's discovery document");
            return refuse(
                &state,
                &headers,
                StatusCode::BAD_GATEWAY,
                format!(
                    "Signing in with {} is not possible now: its identity provider could not \
                     be reached or did not describe itself as expected. Try again later, or \
                     tell your administrator.",
                    client.display_name
                ),
                &next,
            )
            .await;
        }
    };
    let flow = Flow {
        iss,
        next,
        state: random_token(),
        nonce: random_token(),
        verifier: random_token(),
        started: state.clock.now().unix_seconds(),
    };
    let Ok(mut target) = reqwest::Url::parse(&endpoints.authorization_endpoint) else {
        // Checked when discovered; kept for safety.
        return refuse(
            &state,
            &headers,
            StatusCode::BAD_GATEWAY,
            format!(
                "Signing in with {} is not possible now: its authorization endpoint is not a \
                 valid URL.",
                client.display_name
            ),
            &flow.next,
        )
        .await;
    };
    target
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.client_id)
        .append_pair("redirect_uri", &redirect_uri(&state))
        .append_pair("scope", &client.scopes)
        .append_pair("state", &flow.state)
        .append_pair("nonce", &flow.nonce)
        .append_pair("code_challenge", &challenge_of(&flow.verifier))
        .append_pair("code_challenge_method", "S256");
    let mut resp = Redirect::to(target.as_str()).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            &state,
            flow_cookie_name(&state),
            &flow.encode(),
            Some(FLOW_LIFETIME.as_secs()),
        ),
    );
    resp
}

#[derive(Deserialize, Default)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    /// RFC 9207: the issuer that answers, when it says so.
    #[serde(default)]
    iss: Option<String>,
}

/// Why a callback did not sign anyone in.
struct Failure {
    status: StatusCode,
    /// What went wrong, for the person and the log (no code, no secret).
    reason: String,
    /// Whether it counts against the address's sign-in limit.
    counts: bool,
}

impl Failure {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Failure {
            status,
            reason: reason.into(),
            counts: false,
        }
    }

    fn counted(status: StatusCode, reason: impl Into<String>) -> Self {
        Failure {
            counts: true,
            ..Failure::new(status, reason)
        }
    }
}

/// `GET /console/sign-in/callback`: the issuer's answer.
pub async fn callback(
    State(state): State<AppState>,
    crate::client_address::Peer(peer): crate::client_address::Peer,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let address = client_ip(peer, &headers, &state.config.trusted_proxies);
    let flow = cookie(&headers, flow_cookie_name(&state)).map(Flow::decode);
    let clear = flow
        .is_some()
        .then(|| set_cookie(&state, flow_cookie_name(&state), "", Some(0)));
    let flow = flow.flatten();
    let name = flow
        .as_ref()
        .and_then(|f| console_issuer(&state, &f.iss))
        .map(|(_, c)| c.display_name);
    let next = flow
        .as_ref()
        .map(|f| safe_next(&f.next).to_string())
        .unwrap_or_else(|| safe_next("").to_string());

    let outcome = match crate::oauth::sign_in::check_address(&state, address).await {
        Err(f) => Err(Failure::new(StatusCode::TOO_MANY_REQUESTS, f.description)),
        Ok(()) => complete(&state, &q, flow).await,
    };
    let mut resp = match outcome {
        Ok(session_cookie) => {
            let mut resp = Redirect::to(&next).into_response();
            resp.headers_mut()
                .append(header::SET_COOKIE, session_cookie);
            resp
        }
        Err(failure) => {
            tracing::info!(
                issuer = name.as_deref().unwrap_or("unknown"),
                %address,
                reason = %failure.reason,
                status = failure.status.as_u16(),
                "console sign-in through an external issuer refused"
            );
            if failure.counts {
                if let Err(e) = crate::oauth::sign_in::count_address_failure(&state, address).await
                {
                    tracing::warn!(error = %e.description, "cannot count a failed console sign-in");
                }
            }
            let with = name
                .as_deref()
                .map(|n| format!(" with {n}"))
                .unwrap_or_default();
            let message = if failure.status == StatusCode::TOO_MANY_REQUESTS {
                failure.reason
            } else {
                format!(
                    "The sign-in{with} did not complete: {}",
                    failure.reason.trim_end_matches('.')
                ) + "."
            };
            refuse(&state, &headers, failure.status, message, &next).await
        }
    };
    if let Some(clear) = clear {
        resp.headers_mut().append(header::SET_COOKIE, clear);
    }
    resp
}

/// Checks the answer against the browser's flow, redeems the code, verifies the ID
/// token and opens the session; returns the session's cookie.
async fn complete(
    state: &AppState,
    q: &CallbackQuery,
    flow: Option<Flow>,
) -> Result<HeaderValue, Failure> {
    let Some(flow) = flow else {
        return Err(Failure::counted(
            StatusCode::BAD_REQUEST,
            "this browser has no sign-in in progress (it may have expired, or cookies are \
             blocked); start again",
        ));
    };
    let now = state.clock.now().unix_seconds();
    if now < flow.started || now >= flow.started + FLOW_LIFETIME.as_secs() as i64 {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!(
                "it took longer than {} minutes; start again",
                FLOW_LIFETIME.as_secs() / 60
            ),
        ));
    }
    let presented = q.state.as_deref().unwrap_or_default();
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(flow.state.as_bytes())) {
        return Err(Failure::counted(
            StatusCode::BAD_REQUEST,
            "the answer does not belong to the sign-in this browser started (the state did \
             not match); start again",
        ));
    }
    if q.iss.as_deref().is_some_and(|iss| iss != flow.iss) {
        return Err(Failure::counted(
            StatusCode::BAD_REQUEST,
            "the answer came from another identity provider than the one asked (iss); start \
             again",
        ));
    }
    let Some((issuer, client)) = console_issuer(state, &flow.iss) else {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "this way of signing in is no longer configured; choose another",
        ));
    };
    if let Some(error) = q.error.as_deref() {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "the identity provider answered {}",
                crate::oauth::external::describe(error, q.error_description.as_deref())
            ),
        ));
    }
    let code = q.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
        Failure::counted(
            StatusCode::BAD_REQUEST,
            "the identity provider's answer has no code; start again",
        )
    })?;
    let unavailable = |error: String| {
        tracing::warn!(issuer = %issuer.issuer, %error, "console sign-in: the identity provider is not available");
        Failure::new(
            StatusCode::BAD_GATEWAY,
            "the identity provider could not be reached or did not answer as expected; try \
             again later, or tell your administrator",
        )
    };
    let endpoints = state
        .external
        .endpoints(&issuer.issuer)
        .await
        .map_err(unavailable)?;
    let redirect = redirect_uri(state);
    let id_token = state
        .external
        .redeem_code(
            &endpoints,
            &CodeRedemption {
                code,
                code_verifier: &flow.verifier,
                redirect_uri: &redirect,
                client_id: &client.client_id,
                client_secret: client.client_secret.as_ref(),
            },
        )
        .await
        .map_err(|e| match e {
            RedeemError::Refused(words) => Failure::counted(
                StatusCode::UNAUTHORIZED,
                format!("the identity provider refused the sign-in code ({words}); start again"),
            ),
            RedeemError::Unavailable(error) => unavailable(error),
        })?;
    let user = state
        .external
        .verify_id_token(&id_token, &issuer.issuer, &client.client_id, &flow.nonce)
        .await
        .map_err(|e| {
            Failure::counted(
                StatusCode::UNAUTHORIZED,
                format!(
                    "the identity provider's ID token was refused: {}",
                    e.public_message()
                ),
            )
        })?;
    session::open(
        state,
        NewSession {
            tenant_id: user.tenant_id,
            user_object_id: user.object_id,
            upn: user.upn,
            groups: user.groups,
            issuer: issuer.issuer.clone(),
        },
    )
    .await
    .map_err(|e| Failure::new(super::status_of(&e), super::words::in_words(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_the_verifiers_sha256_in_base64url() {
        // Computed independently: base64.urlsafe_b64encode(sha256(verifier)), unpadded.
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K9uXNtaUfJ8VlnL0fVj9g7qxlM"),
            "LonerKZmyGz24BiOSB0_zVFoIvycNl1M3P4MRS1xDOI"
        );
    }

    #[test]
    fn a_flow_survives_its_cookie_and_garbage_does_not_decode() {
        let flow = Flow {
            iss: "https://idp.example/realms/corp".into(),
            next: "/console/actions?x=1".into(),
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
            started: 1_796_601_600,
        };
        let value = flow.encode();
        assert!(value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let back = Flow::decode(&value).unwrap();
        assert_eq!(
            (back.iss, back.next, back.state),
            (flow.iss, flow.next, flow.state)
        );
        assert!(Flow::decode("not base64!").is_none());
        assert!(Flow::decode(&URL_SAFE_NO_PAD.encode("{}")).is_none());
        assert!(Flow::decode(&"A".repeat(5000)).is_none());
    }
}
