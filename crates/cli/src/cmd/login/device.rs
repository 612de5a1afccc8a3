//! `appfence login --device-code`: the device authorization grant (RFC 8628), for a
//! host without a browser. The person enters the code on the console's device page from
//! any browser; this process polls at the interval the server asks for.

use appfence_client::flows::{self, Endpoints, UserTokens};

use crate::error::CliError;

pub async fn sign_in(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    client_id: &str,
) -> Result<UserTokens, CliError> {
    let url = endpoints
        .device_authorization_endpoint
        .as_deref()
        .ok_or_else(|| {
            CliError::Failed(
                "the server offers no device code sign-in (its discovery document names no \
                 device_authorization_endpoint): run `appfence login` without --device-code"
                    .into(),
            )
        })?;
    let device = flows::start_device(http, url, client_id).await?;
    eprintln!("{}", device.instructions());
    eprintln!(
        "Waiting for the sign-in to be approved (the code is valid for {} minutes)...",
        device.expires_in / 60
    );
    flows::wait_for_approval(
        http,
        &endpoints.token_endpoint,
        client_id,
        &device,
        tokio::time::sleep,
    )
    .await
    .map_err(|e| match e.code() {
        Some("access_denied") => CliError::Failed(format!("the sign-in was denied: {e}")),
        Some("expired_token") => CliError::Failed(format!(
            "the code expired before the sign-in was approved: run `appfence login \
             --device-code` again ({e})"
        )),
        _ => e.into(),
    })
}
