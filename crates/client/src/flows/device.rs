//! The device authorization grant (RFC 8628): a code the person enters on another
//! device, then polling the token endpoint at the interval the server asks for.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::Deserialize;

use super::{post_token_form, user_scope, UserTokens};
use crate::error::ClientError;

pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// What `slow_down` adds to the polling interval, for good (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The interval when the server names none (RFC 8628 §3.2).
const DEFAULT_INTERVAL: u64 = 5;

/// The device authorization response (RFC 8628 §3.2).
#[derive(Clone, Deserialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds the codes are valid.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// What to tell the person (Entra's extension), if the server words it.
    #[serde(default)]
    pub message: Option<String>,
}

fn default_interval() -> u64 {
    DEFAULT_INTERVAL
}

impl fmt::Debug for DeviceAuthorization {
    // The device code redeems the tokens: never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &"<redacted>")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl DeviceAuthorization {
    /// What to show the person: the server's message, or the URI and the code.
    pub fn instructions(&self) -> String {
        self.message.clone().unwrap_or_else(|| {
            format!(
                "To sign in, open {} in a browser and enter the code {}.",
                self.verification_uri, self.user_code
            )
        })
    }
}

/// Starts a device sign-in for the public client `client_id`.
pub async fn start_device(
    http: &reqwest::Client,
    device_authorization_url: &str,
    client_id: &str,
) -> Result<DeviceAuthorization, ClientError> {
    let scope = user_scope();
    let resp = http
        .post(device_authorization_url)
        .form(&[("client_id", client_id), ("scope", scope.as_str())])
        .send()
        .await
        .map_err(ClientError::transport)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(ClientError::transport)?;
    if !status.is_success() {
        return Err(ClientError::from_response(status, None, &body));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ClientError::Decode(format!(
            "unexpected device authorization response from {device_authorization_url}: {e}"
        ))
    })
}

/// One poll's answer that is not an error.
#[derive(Debug)]
pub enum DevicePoll {
    /// `authorization_pending`: the person has not decided yet.
    Pending,
    /// `slow_down`: poll less often.
    SlowDown,
    Approved(UserTokens),
}

/// Polls once. `expired_token`, `access_denied` and any other error are errors.
pub async fn poll_device(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    device_code: &str,
) -> Result<DevicePoll, ClientError> {
    let result = post_token_form(
        http,
        token_url,
        &[
            ("grant_type", DEVICE_CODE_GRANT),
            ("client_id", client_id),
            ("device_code", device_code),
        ],
    )
    .await;
    match result {
        Ok(tokens) => Ok(DevicePoll::Approved(tokens)),
        Err(e) if e.code() == Some("authorization_pending") => Ok(DevicePoll::Pending),
        Err(e) if e.code() == Some("slow_down") => Ok(DevicePoll::SlowDown),
        Err(e) => Err(e),
    }
}

/// Polls until the person approves, waiting `sleep(interval)` before every poll (never
/// less than the server's interval, 5 s more after each `slow_down`), until the codes
/// expire. `sleep` is the caller's so that tests need not wait.
pub async fn wait_for_approval<S, F>(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    device: &DeviceAuthorization,
    mut sleep: S,
) -> Result<UserTokens, ClientError>
where
    S: FnMut(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut interval = Duration::from_secs(device.interval.max(1));
    let lifetime = Duration::from_secs(device.expires_in);
    let mut waited = Duration::ZERO;
    loop {
        if waited >= lifetime {
            return Err(ClientError::Api {
                status: 400,
                code: "expired_token".into(),
                message: format!(
                    "The code was not approved within {} seconds",
                    lifetime.as_secs()
                ),
                target: None,
                retry_after: None,
            });
        }
        sleep(interval).await;
        waited += interval;
        match poll_device(http, token_url, client_id, &device.device_code).await? {
            DevicePoll::Pending => {}
            DevicePoll::SlowDown => interval += SLOW_DOWN_STEP,
            DevicePoll::Approved(tokens) => return Ok(tokens),
        }
    }
}
