//! `/console/device`: the verification page of the device authorization grant (RFC
//! 8628 §3.3). The signed-in person enters the code their device shows, sees which
//! application asks, and approves or denies. Wrong codes count as failed sign-ins of
//! the address (the same throttle as wrong passwords), so codes cannot be guessed.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::layout::{page, respond, Notice, Section};
use super::session::Viewer;
use crate::client_address::client_ip;
use crate::oauth::flows::device;
use crate::AppState;

#[derive(Deserialize, Default)]
pub struct DeviceQuery {
    #[serde(default)]
    user_code: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct DeviceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_code: String,
    /// `approve` or `deny`; absent: show what is asked first.
    #[serde(default)]
    decision: Option<String>,
}

fn code_form(viewer: &Viewer, notice: Option<&Notice>, code: &str, status: StatusCode) -> Response {
    respond(
        status,
        page(
            "Sign in a device",
            Some(viewer),
            Section::None,
            notice,
            html! {
                h1 { "Sign in on another device" }
                p { "Enter the code your device or command line shows." }
                div.panel {
                    form method="post" action="/console/device" {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label.field { span { "Code" }
                            input #user_code name="user_code" value=(code) autocomplete="off" autofocus required; }
                        button type="submit" { "Next" }
                    }
                }
            },
        ),
    )
}

pub async fn form(viewer: Viewer, Query(q): Query<DeviceQuery>) -> Response {
    code_form(
        &viewer,
        None,
        q.user_code.as_deref().unwrap_or_default(),
        StatusCode::OK,
    )
}

pub async fn submit(
    State(state): State<AppState>,
    viewer: Viewer,
    crate::client_address::Peer(peer): crate::client_address::Peer,
    headers: HeaderMap,
    form: Result<Form<DeviceForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    if let Err(e) = viewer.check_csrf(&form.csrf) {
        return super::error_page(Some(&viewer), &e);
    }
    let address = client_ip(peer, &headers, &state.config.trusted_proxies);
    if let Err(f) = crate::oauth::sign_in::check_address(&state, address).await {
        let notice = Notice::Error(f.description);
        return code_form(
            &viewer,
            Some(&notice),
            &form.user_code,
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let found = match device::pending(&state, &viewer.principal.tenant_id, &form.user_code).await {
        Ok(f) => f,
        Err(e) => return super::error_page(Some(&viewer), &e),
    };
    let Some(pending) = found else {
        let _ = crate::oauth::sign_in::count_address_failure(&state, address).await;
        let notice = Notice::Error(super::words::in_words(&device::unknown_code()));
        return code_form(
            &viewer,
            Some(&notice),
            &form.user_code,
            StatusCode::BAD_REQUEST,
        );
    };
    let (approve, who) = match form.decision.as_deref() {
        Some("approve") => (true, "approved"),
        Some("deny") => (false, "denied"),
        _ => {
            // Show who asks; the person decides.
            return respond(
                StatusCode::OK,
                page(
                    "Sign in a device",
                    Some(&viewer),
                    Section::None,
                    None,
                    html! {
                        h1 { "Sign in to " (pending.client_name) "?" }
                        p { "The application " strong data-testid="device-client" { (pending.client_name) }
                            " asks to act as you (" (viewer.upn) "). Approve only if you started this sign-in yourself." }
                        div.panel {
                            form method="post" action="/console/device" {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                input type="hidden" name="user_code" value=(form.user_code);
                                button type="submit" name="decision" value="approve" { "Approve" }
                                " "
                                button.secondary type="submit" name="decision" value="deny" { "Deny" }
                            }
                        }
                    },
                ),
            );
        }
    };
    if approve && !viewer.local {
        let e = appfence_core::Error::BadRequest(
            "Device sign-in is for local users of appfence; you signed in through an external \
             issuer. Use `appfence login` (browser) instead."
                .into(),
        );
        return super::error_page(Some(&viewer), &e);
    }
    let oid = match &viewer.principal.caller {
        appfence_core::authz::Caller::User { object_id, .. } => object_id.clone(),
        _ => String::new(),
    };
    match device::decide(&state, &pending.grant, approve, (&oid, &viewer.upn)).await {
        Ok(true) => {
            tracing::info!(user = %viewer.upn, client = %pending.client_name, "device sign-in {who}");
            let message = if approve {
                format!(
                    "You approved the sign-in of {}. You can return to your device.",
                    pending.client_name
                )
            } else {
                format!("You denied the sign-in of {}.", pending.client_name)
            };
            respond(
                StatusCode::OK,
                page(
                    "Sign in a device",
                    Some(&viewer),
                    Section::None,
                    Some(&Notice::Ok(message)),
                    html! { h1 { "Device sign-in " (who) } },
                ),
            )
        }
        Ok(false) => {
            let notice = Notice::Error(super::words::in_words(&device::unknown_code()));
            code_form(&viewer, Some(&notice), "", StatusCode::BAD_REQUEST)
        }
        Err(e) => super::error_page(Some(&viewer), &e),
    }
}
