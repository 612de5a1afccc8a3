//! Signing a person in (OAuth 2.0 for native apps): the endpoints from the discovery
//! document, the authorization code grant with PKCE (RFC 7636, S256), the device
//! authorization grant (RFC 8628), and refresh tokens. Only the protocol: where tokens
//! are kept, and what the person sees, is the caller's business.

mod claims;
mod code;
mod device;
mod discovery;
mod pkce;

use std::fmt;

use serde::Deserialize;

use crate::error::ClientError;
use crate::token::MDE_SCOPE;

pub use claims::{identity, TokenIdentity};
pub use code::{authorize_url, redeem_code, AuthorizeRequest};
pub use device::{
    poll_device, start_device, wait_for_approval, DeviceAuthorization, DevicePoll, SLOW_DOWN_STEP,
};
pub use discovery::{discover, Endpoints};
pub use pkce::{random_state, Pkce};

/// What a person's sign-in asks for: the API (MDE's scope) and a refresh token.
pub fn user_scope() -> String {
    format!("{MDE_SCOPE} offline_access")
}

/// The token endpoint's answer to a person's grant (RFC 6749 §5.1).
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct UserTokens {
    pub access_token: String,
    /// Seconds the access token is valid from now.
    pub expires_in: u64,
    /// Absent when the server issues none (no `offline_access`, an external user).
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl fmt::Debug for UserTokens {
    // Tokens must not end up in logs or panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTokens")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

/// `grant_type=refresh_token` (RFC 6749 §6) for a public client. The server rotates the
/// refresh token: the answer's replaces it, and the old one must never be sent again.
pub async fn refresh(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    refresh_token: &str,
) -> Result<UserTokens, ClientError> {
    let scope = user_scope();
    post_token_form(
        http,
        token_url,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
            ("scope", &scope),
        ],
    )
    .await
}

/// POSTs a form to the token endpoint; an error answer is a [`ClientError::Api`] with
/// the OAuth `error` as its code and `error_description` as its message.
pub(crate) async fn post_token_form(
    http: &reqwest::Client,
    token_url: &str,
    form: &[(&str, &str)],
) -> Result<UserTokens, ClientError> {
    let resp = http
        .post(token_url)
        .form(form)
        .send()
        .await
        .map_err(ClientError::transport)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(ClientError::transport)?;
    if !status.is_success() {
        return Err(ClientError::from_response(status, None, &body));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ClientError::Decode(format!("unexpected token response from {token_url}: {e}"))
    })
}

#[cfg(test)]
mod tests;
