//! The endpoints of a tenant, from its OpenID Connect discovery document
//! (`{server}/{tenant}/v2.0/.well-known/openid-configuration`), as OAuth clients find
//! them rather than guessing paths.

use serde::Deserialize;

use crate::encode;
use crate::error::ClientError;

/// The endpoints the sign-in flows use.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Endpoints {
    pub authorization_endpoint: String,
    /// Absent from servers without the device authorization grant.
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    pub token_endpoint: String,
}

/// The discovery document's URL for `tenant` at `server`.
pub fn discovery_url(server: &str, tenant: &str) -> String {
    format!(
        "{}/{}/v2.0/.well-known/openid-configuration",
        server.trim_end_matches('/'),
        encode::encode(tenant)
    )
}

/// Reads the tenant's discovery document.
pub async fn discover(
    http: &reqwest::Client,
    server: &str,
    tenant: &str,
) -> Result<Endpoints, ClientError> {
    let url = discovery_url(server, tenant);
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(ClientError::transport)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(ClientError::transport)?;
    if !status.is_success() {
        return Err(ClientError::from_response(status, None, &body));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ClientError::Decode(format!("unexpected discovery document at {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_escaped_in_the_discovery_url() {
        assert_eq!(
            discovery_url("http://127.0.0.1:8080/", "a b"),
            "http://127.0.0.1:8080/a%20b/v2.0/.well-known/openid-configuration"
        );
    }
}
