//! The end-session endpoint the discovery documents name (OpenID Connect RP-Initiated
//! Logout's `end_session_endpoint`, as Entra ID publishes it): `GET
//! /{tenant}/oauth2/v2.0/logout` (v1: `/{tenant}/oauth2/logout`). It shows the console's
//! sign-out confirmation; see `console::end_session_page` for why it never redirects.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::AppState;

pub async fn end_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match crate::console::signed_in(&state, &headers).await {
        Ok(viewer) => crate::console::end_session_page(viewer.as_ref()),
        Err(e) => crate::console::error_page(None, &e),
    }
}
