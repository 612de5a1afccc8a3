//! Signing in and out. Local users of the built-in issuer sign in with their name and
//! password, under the token endpoint's limits (per address, per account, with
//! lockouts), checked by the same code. The form is protected against login CSRF by a
//! cookie it must match.

use appfence_core::Error;
use appfence_proto::Secret;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{page, respond, Notice, Section};
use super::session::{self, cookie, csrf_of, random_token, set_cookie, NewSession, Viewer};
use crate::client_address::client_ip;
use crate::oauth::request::UserCredentials;
use crate::AppState;

const FORM_COOKIE: &str = "appfence-sign-in";

#[derive(Deserialize, Default)]
pub struct SignInQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    signed_out: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct SignInForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

impl SignInForm {
    /// An empty form returning to `next` (made safe).
    pub(super) fn returning_to(next: &str) -> Self {
        SignInForm {
            next: safe_next(next).to_string(),
            ..Default::default()
        }
    }
}

/// Where to go after signing in: a console page, or this server's authorization
/// endpoint (`/{tenant}/oauth2/v2.0/authorize?...`, v1 too) when a sign-in flow sent the
/// browser here; never another site.
pub(super) fn safe_next(next: &str) -> &str {
    let ok = (next.starts_with("/console/") && !next.starts_with("/console/live")
        || is_authorize_url(next))
        && !next.contains("//")
        && !next.contains('\\')
        && next.len() < 2048;
    if ok {
        next
    } else {
        "/console/devices"
    }
}

/// `/{tenant}/oauth2/v2.0/authorize?...` or `/{tenant}/oauth2/authorize?...`.
pub(super) fn is_authorize_url(next: &str) -> bool {
    let Some((path, _query)) = next.split_once('?') else {
        return false;
    };
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let Some((tenant, endpoint)) = rest.split_once('/') else {
        return false;
    };
    !tenant.is_empty()
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && (endpoint == "oauth2/v2.0/authorize" || endpoint == "oauth2/authorize")
}

/// Going on to `next` after a sign-in. The authorization endpoint redirects to the
/// client's redirect URI (another origin), which the console's CSP `form-action 'self'`
/// would refuse to follow after a form's POST: a page that continues there instead.
pub(super) fn continue_to(next: &str) -> Response {
    if !is_authorize_url(next) {
        return Redirect::to(next).into_response();
    }
    let markup = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content={"0;url=" (next)};
                title { "Signed in · appfence" }
            }
            body { p { "Signed in. " a href=(next) { "Continue" } } }
        }
    };
    respond(StatusCode::OK, markup)
}

pub async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SignInQuery>,
) -> Response {
    let notice = q
        .signed_out
        .is_some()
        .then(|| Notice::Info("You are signed out.".into()));
    let next = safe_next(q.next.as_deref().unwrap_or_default()).to_string();
    let draft = SignInForm {
        next,
        ..Default::default()
    };
    render(&state, &headers, StatusCode::OK, notice, &draft).await
}

/// The sign-in page; sets the form cookie when the browser has none.
pub(super) async fn render(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    notice: Option<Notice>,
    draft: &SignInForm,
) -> Response {
    let (form_secret, fresh) = match cookie(headers, FORM_COOKIE) {
        Some(s) if s.len() == 43 => (s.to_string(), false),
        _ => (random_token(), true),
    };
    let tenants = state.store.tenants().await.unwrap_or_default();
    let external: Vec<(usize, String)> = state
        .access
        .current()
        .issuers
        .iter()
        .enumerate()
        .filter_map(|(n, i)| i.console.as_ref().map(|c| (n, c.display_name.clone())))
        .collect();
    let markup = sign_in_page(
        &csrf_of(&form_secret),
        tenants.len() > 1,
        &external,
        notice.as_ref(),
        draft,
    );
    let mut resp = respond(status, markup);
    if fresh {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(state, FORM_COOKIE, &form_secret, Some(3600)),
        );
    }
    resp
}

fn sign_in_page(
    csrf: &str,
    ask_tenant: bool,
    external: &[(usize, String)],
    notice: Option<&Notice>,
    draft: &SignInForm,
) -> Markup {
    let next = session::form_urlencoded(&draft.next);
    page(
        "Sign in",
        None,
        Section::None,
        None,
        html! {
            div.signin {
                h1 { "Sign in to appfence" }
                @if let Some(n) = notice { (super::layout::notice_box(n)) }
                @if !external.is_empty() {
                    // Links, not forms: the answer redirects to the identity provider,
                    // which the CSP's form-action would refuse to follow.
                    div.panel.external {
                        @for (n, name) in external {
                            a.button href={"/console/sign-in/external/" (n) "?next=" (next)} {
                                "Sign in with " (name)
                            }
                        }
                    }
                    p.or { "or with a local account" }
                }
                div.panel {
                    form method="post" action="/console/sign-in" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="next" value=(draft.next);
                        @if ask_tenant {
                            label.field { span { "Tenant id" }
                                input name="tenant" value=(draft.tenant) autocomplete="organization" required; }
                        }
                        label.field { span { "User name" }
                            input #username name="username" value=(draft.username) autocomplete="username" autofocus required; }
                        label.field { span { "Password" }
                            input #password name="password" type="password" autocomplete="current-password" required; }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        },
    )
}

pub async fn submit(
    State(state): State<AppState>,
    crate::client_address::Peer(peer): crate::client_address::Peer,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(mut form)) = form else {
        let draft = SignInForm::default();
        let notice =
            Notice::Error("The sign-in form could not be read; please fill it in again.".into());
        return render(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            Some(notice),
            &draft,
        )
        .await;
    };
    let password = std::mem::take(&mut form.password);
    form.next = safe_next(&form.next).to_string();
    let fail = |status, message: String| (status, message);
    let outcome = async {
        let expected = cookie(&headers, FORM_COOKIE).map(csrf_of);
        if expected.as_deref() != Some(form.csrf.as_str()) {
            return Err(fail(
                StatusCode::FORBIDDEN,
                "The sign-in form expired or did not come from this console. Please sign in again."
                    .into(),
            ));
        }
        let tenant = resolve_tenant(&state, &form.tenant)
            .await
            .map_err(|e| fail(super::status_of(&e), super::words::in_words(&e)))?;
        let address = client_ip(peer, &headers, &state.config.trusted_proxies);
        let credentials = UserCredentials {
            username: form.username.trim().to_string(),
            password: Secret::new(password),
        };
        let user = crate::oauth::sign_in::sign_in_person(&state, &tenant, address, &credentials)
            .await
            .map_err(|f| {
                let status = if f.status == StatusCode::TOO_MANY_REQUESTS || f.retry_after.is_some()
                {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::UNAUTHORIZED
                };
                // The OAuth description names no secret; drop Entra's numbered prefix.
                let words = f
                    .description
                    .split_once(": ")
                    .filter(|(code, _)| code.starts_with("AADSTS"))
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or(f.description);
                fail(status, words)
            })?;
        session::open(
            &state,
            NewSession {
                tenant_id: tenant.id.clone(),
                user_object_id: user.object_id,
                upn: user.upn,
                groups: user.groups,
                issuer: session::LOCAL_ISSUER.to_string(),
            },
        )
        .await
        .map_err(|e| fail(super::status_of(&e), super::words::in_words(&e)))
    }
    .await;
    match outcome {
        Ok(cookie) => {
            let mut resp = continue_to(&form.next);
            resp.headers_mut().append(header::SET_COOKIE, cookie);
            resp
        }
        Err((status, message)) => {
            render(
                &state,
                &headers,
                status,
                Some(Notice::Error(message)),
                &form,
            )
            .await
        }
    }
}

/// The tenant named in the form, or the only one.
async fn resolve_tenant(state: &AppState, named: &str) -> Result<appfence_core::Tenant, Error> {
    let named = named.trim();
    if !named.is_empty() {
        return state
            .store
            .tenant(named)
            .await?
            .ok_or_else(|| Error::BadRequest("There is no such tenant".into()));
    }
    let mut tenants = state.store.tenants().await?;
    match tenants.len() {
        1 => Ok(tenants.remove(0)),
        _ => Err(Error::BadRequest("Say which tenant you sign in to".into())),
    }
}

#[derive(Deserialize, Default)]
pub struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(
    State(state): State<AppState>,
    viewer: Viewer,
    form: Result<Form<SignOutForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if let Err(e) = viewer.check_csrf(&csrf) {
        return super::error_page(Some(&viewer), &e);
    }
    match session::close(&state, &viewer).await {
        Ok(clear) => {
            let mut resp = Redirect::to("/console/sign-in?signed_out=1").into_response();
            resp.headers_mut().append(header::SET_COOKIE, clear);
            resp
        }
        Err(e) => super::error_page(Some(&viewer), &e),
    }
}
