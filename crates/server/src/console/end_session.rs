//! The page behind the discovery documents' `end_session_endpoint`
//! (`/{tenant}/oauth2/v2.0/logout`): a person signed in to the console is asked to
//! confirm, with the console's own sign-out form (a POST with the CSRF token, so no
//! other site can sign anyone out); a person not signed in is told so. It never
//! redirects: `post_logout_redirect_uri` is not followed, so the page cannot be used to
//! send anyone elsewhere.

use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::layout::{self, Section};
use super::session::Viewer;

pub(crate) fn end_session_page(viewer: Option<&Viewer>) -> Response {
    let body = match viewer {
        Some(v) => html! {
            h1 { "Sign out of appfence?" }
            p { "You are signed in as " strong { (v.upn) } ". Signing out ends this browser's console session on every server; command-line sign-ins (" code { "appfence login" } ") are not affected." }
            form method="post" action="/console/sign-out" {
                input type="hidden" name="csrf" value=(v.csrf);
                button type="submit" { "Sign out" }
            }
        },
        None => html! {
            h1 { "Signed out" }
            p { "You are not signed in to appfence in this browser. " a href="/console/sign-in" { "Sign in" } "." }
        },
    };
    let mut resp = layout::respond(
        StatusCode::OK,
        layout::page("Sign out", viewer, Section::None, None, body),
    );
    layout::add_security_headers(resp.headers_mut());
    resp
}
