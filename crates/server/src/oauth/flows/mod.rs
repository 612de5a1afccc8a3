//! Sign-in without passwords for people: the authorization code grant with PKCE
//! (RFC 6749 §4.1, RFC 7636, S256 only) at `/{tenant}/oauth2/v2.0/authorize`, the device
//! authorization grant (RFC 8628) at `/{tenant}/oauth2/v2.0/devicecode`, and refresh
//! tokens for both (scope `offline_access`), rotated on use.
//!
//! The user authenticates through the web console's session. Codes, device codes and
//! refresh tokens are 256-bit random secrets of which the store keeps only the SHA-256
//! ([`appfence_core::grants::OAuthGrant`]), so any replica redeems them and a copy of the
//! database redeems nothing. Each use is a compare-and-set in the store: one wins. A
//! code, device code or refresh token presented again after its use revokes its whole
//! family (every refresh token descending from the same sign-in).

pub mod authorize;
pub mod device;
pub mod end_session;
pub mod grants;

use std::time::Duration;

use appfence_core::grants::ClientRegistration;
use appfence_core::{AppRegistration, Error};
use appfence_proto::Timestamp;
use serde::{Deserialize, Serialize};

use super::audience::{TokenPolicy, TokenVersion};
use super::failure::OAuthFailure;
use crate::AppState;

/// The built-in public client of the `appfence` CLI, the same in every tenant (like
/// the Azure CLI's well-known client id): loopback redirect URIs only.
pub const CLI_CLIENT_ID: &str = "3c5f2a10-8a4e-4e0b-9d2c-61f0c1a9e7b4";
pub const CLI_CLIENT_NAME: &str = "appfence CLI";
/// The redirect URIs of the built-in client: any port (RFC 8252 §7.3).
pub const CLI_REDIRECT_URIS: [&str; 3] = [
    "http://127.0.0.1/callback",
    "http://[::1]/callback",
    "http://localhost/callback",
];

/// An authorization code is redeemable this long (Entra: a few minutes; RFC 6749 §4.1.2
/// recommends at most 10; we need only the browser's round trip).
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// A device code and its user code are valid this long (Entra: 15 minutes).
pub const DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The polling interval a device client is told; polling faster gets `slow_down`.
pub const DEVICE_INTERVAL: Duration = Duration::from_secs(5);
/// A refresh token is valid this long unless rotated (Entra: 90 days).
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// The scopes of OpenID Connect and OAuth this server understands beside the resource.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// A client of a sign-in flow: the application and how it is registered.
#[derive(Clone, Debug)]
pub struct Client {
    pub app: AppRegistration,
    pub public: bool,
    pub redirect_uris: Vec<String>,
}

impl Client {
    /// The built-in CLI client in `tenant_id`.
    fn built_in_cli(tenant_id: &str) -> Client {
        Client {
            app: AppRegistration {
                tenant_id: tenant_id.to_string(),
                client_id: CLI_CLIENT_ID.to_string(),
                display_name: CLI_CLIENT_NAME.to_string(),
                roles: Vec::new(),
                created: Timestamp::from_ticks(0),
                disabled: None,
            },
            public: true,
            redirect_uris: CLI_REDIRECT_URIS.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn allows_redirect(&self, presented: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|r| redirect_matches(r, presented))
    }
}

/// The client `client_id` of the tenant, if it exists.
pub async fn find_client(
    state: &AppState,
    tenant_id: &str,
    client_id: &str,
) -> Result<Option<Client>, Error> {
    if client_id.eq_ignore_ascii_case(CLI_CLIENT_ID) {
        return Ok(Some(Client::built_in_cli(tenant_id)));
    }
    let Some(app) = state.store.app(tenant_id, client_id).await? else {
        return Ok(None);
    };
    let registration = state
        .store
        .client_registration(tenant_id, client_id)
        .await?;
    let (public, redirect_uris) = match registration {
        Some(ClientRegistration {
            public,
            redirect_uris,
            ..
        }) => (public, redirect_uris),
        None => (false, Vec::new()),
    };
    Ok(Some(Client {
        app,
        public,
        redirect_uris,
    }))
}

/// Whether `presented` matches the registered redirect URI: exactly, or for a loopback
/// `http` URI (127.0.0.1, [::1], localhost) with any port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    match (
        loopback_without_port(registered),
        loopback_without_port(presented),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `http://<loopback host>[:port]<rest>` as (host, rest), the port dropped.
fn loopback_without_port(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("http://")?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return None;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']')?;
        let port = &v6[end + 1..];
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        format!("[{}]", &v6[..end])
    } else {
        let (host, port) = authority.split_once(':').unwrap_or((authority, ""));
        if !(port.is_empty() || is_port(port)) {
            return None;
        }
        host.to_ascii_lowercase()
    };
    let loopback = host == "127.0.0.1" || host == "[::1]" || host == "localhost";
    let path = if path.is_empty() { "/" } else { path };
    loopback.then(|| (host, path.to_string()))
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// What a grant carries to its redemption (the store keeps it as JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// BASE64URL(SHA-256(code_verifier)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The canonical audience of the access tokens.
    pub audience: String,
    /// The OpenID Connect scopes granted (`openid`, `offline_access`, ...).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `1.0` or `2.0`.
    pub version: String,
    /// A local user (read again at each redemption); else an external user whose
    /// groups are these (no refresh token: the issuer, not us, knows their state).
    #[serde(default)]
    pub local: bool,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Detail {
    pub fn version(&self) -> TokenVersion {
        if self.version == TokenVersion::V1.claim() {
            TokenVersion::V1
        } else {
            TokenVersion::V2
        }
    }

    pub fn wants(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// The requested scopes: the OpenID Connect ones, and the resource of the access token
/// (v2: at most one `<resource>/.default`, else the default resource; v1: `resource`).
pub fn requested_scopes(
    policy: &TokenPolicy,
    version: TokenVersion,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<(String, Vec<String>), OAuthFailure> {
    let mut oidc = Vec::new();
    let mut rest = Vec::new();
    for s in scope.unwrap_or_default().split_whitespace() {
        if OIDC_SCOPES.contains(&s) {
            if !oidc.iter().any(|o| o == s) {
                oidc.push(s.to_string());
            }
        } else {
            rest.push(s);
        }
    }
    let default_audience = || policy.audiences().first().map(|a| a.to_string());
    let audience = match version {
        TokenVersion::V1 => match resource {
            Some(r) => policy
                .accept_audience(r)
                .map(str::to_string)
                .ok_or_else(|| {
                    OAuthFailure::invalid_resource(format!(
                        "The resource '{}' is not accepted; accepted resources are: {}",
                        appfence_core::ids::truncate(r, 200),
                        policy.audiences().join(", ")
                    ))
                })?,
            None => default_audience().unwrap_or_default(),
        },
        TokenVersion::V2 if rest.is_empty() => default_audience().unwrap_or_default(),
        TokenVersion::V2 => policy
            .audience_from_scope(&rest.join(" "))
            .map(str::to_string)
            .map_err(|e| OAuthFailure::invalid_scope(e.0))?,
    };
    Ok((audience, oidc))
}

/// A fresh family id for a new sign-in.
pub fn new_family() -> String {
    appfence_core::ids::new_guid()
}

#[cfg(test)]
mod tests;
