//! The web console: server-rendered pages under `/console` for analysts who do not
//! script. It calls the same operations as the API ([`crate::commands`]) as the signed-in
//! user, so portal permissions, device groups and rate limits are the API's. Pages work
//! without JavaScript; a small script makes the action views live (server-sent events).

mod actions;
mod alert;
mod alerts;
mod allowlist;
mod assets;
mod device;
mod device_login;
mod devices;
mod end_session;
mod external;
mod layout;
mod live;
mod session;
mod sign_in;
mod words;

use appfence_core::Error;
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;

use crate::AppState;
pub(crate) use end_session::end_session_page;
pub use live::{LIVE_STREAMS_PER_SESSION, LIVE_STREAM_LIMIT};
pub use session::{from_headers as signed_in, Viewer, SESSION_IDLE, SESSION_LIFETIME};

pub fn routes() -> Router<AppState> {
    let console = Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/devices") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/devices") }),
        )
        .route("/console/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/console/sign-in/external/{n}", get(external::start))
        .route("/console/sign-in/callback", get(external::callback))
        .route("/console/sign-out", post(sign_in::sign_out))
        .route(
            "/console/device",
            get(device_login::form).post(device_login::submit),
        )
        .route("/console/devices", get(devices::list))
        .route("/console/devices/{id}", get(device::show))
        .route("/console/devices/{id}/restrict", post(device::restrict))
        .route("/console/devices/{id}/unrestrict", post(device::unrestrict))
        .route("/console/alerts", get(alerts::list))
        .route("/console/alerts/{id}", get(alert::show).post(alert::update))
        .route("/console/actions", get(actions::center))
        .route("/console/actions/{id}/cancel", post(actions::cancel))
        .route(
            "/console/allowlist",
            get(allowlist::list).post(allowlist::add),
        )
        .route("/console/allowlist/{id}/delete", post(allowlist::delete))
        .route("/console/live/actions", get(live::actions))
        .route("/console/live/devices/{id}", get(live::device))
        .route("/console/assets/{name}", get(assets::serve))
        .layer(axum::middleware::from_fn(layout::security_headers));
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .merge(console)
}

/// The answer to an unknown console path: an HTML page, with the console's headers.
/// `path` with the filters that are set and `page`: the link to another page of a list.
pub(super) fn page_link(path: &str, filters: &[(&str, &str)], page: u32) -> String {
    let mut url = format!("{path}?");
    for (k, v) in filters.iter().filter(|(_, v)| !v.is_empty()) {
        url.push_str(&format!("{k}={}&", session::form_urlencoded(v)));
    }
    url.push_str(&format!("page={page}"));
    url
}

pub fn not_found() -> Response {
    let mut resp = layout::not_found();
    layout::add_security_headers(resp.headers_mut());
    resp
}

/// Counts a page view against the viewer's rate limit for the API it reads, as the
/// same read through the API would be (a person never nears MDE's limits; a script
/// driving the console does).
pub(crate) async fn admit_view(
    state: &AppState,
    viewer: &session::Viewer,
    api: appfence_core::authz::Api,
) -> Result<(), Error> {
    crate::commands::admit(state, &viewer.principal, api)
        .await?
        .into_result()
        .map(drop)
}

pub(crate) fn status_of(e: &Error) -> StatusCode {
    crate::error::status_of(e)
}

/// A page saying what went wrong, with the status the API would answer.
pub(crate) fn error_page(viewer: Option<&session::Viewer>, e: &Error) -> Response {
    let status = status_of(e);
    if status.is_server_error() {
        tracing::error!(error = %e, "console request failed");
    } else {
        tracing::info!(error = %e, status = status.as_u16(), "console request refused");
    }
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        s if s.is_server_error() => "Server error",
        _ => "Cannot do that",
    };
    let mut resp = layout::respond(
        status,
        layout::page(
            title,
            viewer,
            layout::Section::None,
            Some(&layout::Notice::Error(words::in_words(e))),
            html! { h1 { (title) } p { a href="/console/devices" { "Back to the devices" } } },
        ),
    );
    // Also served outside /console (the authorization endpoint's error pages).
    layout::add_security_headers(resp.headers_mut());
    resp
}

#[cfg(test)]
pub(crate) fn safe_next_for_tests(next: &str) -> &str {
    sign_in::safe_next(next)
}
