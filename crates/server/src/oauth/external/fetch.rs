//! Fetching an issuer's published documents: the OpenID discovery document and the
//! JWKS. Every URL must be https (plain http only for loopback, where tests serve
//! them); each fetch is bounded in time and size, so a slow or hostile identity
//! provider cannot hold a request or the memory of the server.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The whole fetch, from connecting to the last byte of the body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Entra's JWKS is about 10 KiB; a larger document than this is not a key set.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// `Ok` when `url` may be fetched: https, or plain http to a loopback host.
/// `what` names the setting in the message, e.g. "jwks_uri".
pub fn check_url(what: &str, url: &str) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("{what} '{url}' is not a valid URL: {e}"))?;
    let host_present = parsed.host().is_some();
    let allowed = match parsed.scheme() {
        "https" => host_present,
        "http" => is_loopback(&parsed),
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    if !host_present {
        return Err(format!("{what} '{url}' has no host"));
    }
    Err(format!(
        "{what} '{url}' must use https (plain http is accepted only for loopback)"
    ))
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts are written in brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Where an issuer's discovery document is (OpenID Connect Discovery 1.0 §4).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// The parts of the discovery document that matter here.
#[derive(Deserialize)]
struct Discovery {
    issuer: Option<String>,
    jwks_uri: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// `issuer`'s discovery document, which must name the same issuer (OpenID Connect
/// Discovery 1.0 §4.3), and its URL.
async fn discover(http: &reqwest::Client, issuer: &str) -> Result<(Discovery, String), String> {
    let url = discovery_url(issuer);
    let doc: Discovery = fetch_json(http, &url).await?;
    match doc.issuer.as_deref() {
        Some(announced) if announced == issuer => Ok((doc, url)),
        Some(announced) => Err(format!(
            "the discovery document {url} names issuer '{announced}', not '{issuer}'"
        )),
        None => Err(format!("the discovery document {url} has no issuer")),
    }
}

/// Where a browser signs in and where its code is redeemed, as `issuer` announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// A client secret goes in HTTP Basic (`client_secret_basic`, the default of
    /// OpenID Connect), unless the issuer announces only `client_secret_post`.
    pub secret_in_basic: bool,
}

/// The authorization and token endpoints announced by `issuer`'s discovery document.
pub async fn discover_endpoints(http: &reqwest::Client, issuer: &str) -> Result<Endpoints, String> {
    let (doc, url) = discover(http, issuer).await?;
    let authorization_endpoint = doc
        .authorization_endpoint
        .ok_or_else(|| format!("the discovery document {url} has no authorization_endpoint"))?;
    check_url(
        "the discovered authorization_endpoint",
        &authorization_endpoint,
    )?;
    let token_endpoint = doc
        .token_endpoint
        .ok_or_else(|| format!("the discovery document {url} has no token_endpoint"))?;
    check_url("the discovered token_endpoint", &token_endpoint)?;
    let secret_in_basic = match &doc.token_endpoint_auth_methods_supported {
        Some(methods) => {
            methods.iter().any(|m| m == "client_secret_basic")
                || !methods.iter().any(|m| m == "client_secret_post")
        }
        None => true,
    };
    Ok(Endpoints {
        authorization_endpoint,
        token_endpoint,
        secret_in_basic,
    })
}

/// The `jwks_uri` announced by `issuer`'s discovery document.
pub async fn discover_jwks_uri(http: &reqwest::Client, issuer: &str) -> Result<String, String> {
    let (doc, url) = discover(http, issuer).await?;
    let jwks_uri = doc
        .jwks_uri
        .ok_or_else(|| format!("the discovery document {url} has no jwks_uri"))?;
    check_url("the discovered jwks_uri", &jwks_uri)?;
    Ok(jwks_uri)
}

/// GETs `url` and parses its body as JSON, within [`FETCH_TIMEOUT`] and
/// [`MAX_DOCUMENT_BYTES`]. The error says what went wrong, for the log and the refusal.
pub async fn fetch_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    check_url("URL", url)?;
    let body = fetch_body(http, url).await?;
    serde_json::from_slice(&body)
        .map_err(|e| format!("{url} did not return the expected JSON: {e}"))
}

async fn fetch_body(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let request = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json");
    let (status, body) = send_bounded(request, url).await?;
    if !status.is_success() {
        return Err(format!("{url} answered HTTP {}", status.as_u16()));
    }
    Ok(body)
}

/// Sends `request` to `url` and reads the answer's status and body, within
/// [`FETCH_TIMEOUT`] and [`MAX_DOCUMENT_BYTES`], whatever the status.
pub async fn send_bounded(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    tokio::time::timeout(FETCH_TIMEOUT, read_bounded(request, url))
        .await
        .map_err(|_| {
            format!(
                "{url} did not answer within {} seconds",
                FETCH_TIMEOUT.as_secs()
            )
        })?
}

async fn read_bounded(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let mut response = request
        .send()
        .await
        .map_err(|e| format!("{url} could not be reached: {}", root_cause(&e)))?;
    // The client may follow redirects; where it ended up must obey the same rule.
    check_url("the redirected URL", response.url().as_str())?;
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_large(url));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("{url} could not be read: {}", root_cause(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large(url));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

fn too_large(url: &str) -> String {
    format!("{url} returned more than {MAX_DOCUMENT_BYTES} bytes")
}

/// reqwest's own message ("error sending request for url ...") hides the reason
/// (connection refused, unknown host, untrusted certificate) in its innermost source.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_required_except_for_loopback() {
        for ok in [
            "https://login.microsoftonline.com/x/discovery/v2.0/keys",
            "https://idp.example:8443/realms/r/protocol/openid-connect/certs",
            "http://127.0.0.1:8080/keys",
            "http://127.1.2.3/keys",
            "http://[::1]:9000/keys",
            "http://localhost/keys",
            "http://LOCALHOST:1/keys",
        ] {
            assert_eq!(check_url("jwks_uri", ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_url("jwks_uri", "http://idp.example/keys"),
            Err("jwks_uri 'http://idp.example/keys' must use https (plain http is accepted only for loopback)".into())
        );
        for bad in [
            "http://10.0.0.1/keys",
            "http://localhost.evil.example/keys",
            "http://[::2]/keys",
            "ftp://idp.example/keys",
            "file:///etc/keys",
        ] {
            assert!(check_url("jwks_uri", bad).is_err(), "{bad}");
        }
        assert!(check_url("issuer", "not a url")
            .unwrap_err()
            .starts_with("issuer 'not a url' is not a valid URL"));
    }

    #[test]
    fn discovery_is_below_the_issuer() {
        assert_eq!(
            discovery_url("https://idp.example/realms/r/"),
            "https://idp.example/realms/r/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://login.microsoftonline.com/t/v2.0"),
            "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration"
        );
    }
}
