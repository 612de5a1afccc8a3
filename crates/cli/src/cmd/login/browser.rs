//! `appfence login`: the authorization code grant with PKCE in the person's browser,
//! redirected back to a one-shot listener on 127.0.0.1 (RFC 8252).

use std::process::{Command, Stdio};
use std::time::Duration;

use appfence_client::flows::{self, AuthorizeRequest, Endpoints, Pkce, UserTokens};

use super::loopback::Loopback;
use crate::env::{Env, ENV_DISPLAY, ENV_WAYLAND_DISPLAY};
use crate::error::CliError;

/// How long the person has to sign in.
pub const SIGN_IN_LIMIT: Duration = Duration::from_secs(5 * 60);

pub async fn sign_in(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    client_id: &str,
    open_browser: bool,
    env: &Env,
) -> Result<UserTokens, CliError> {
    let listener = Loopback::bind().await?;
    let redirect_uri = listener.redirect_uri();
    let pkce = Pkce::new();
    let state = flows::random_state();
    let url = flows::authorize_url(&AuthorizeRequest {
        authorization_endpoint: &endpoints.authorization_endpoint,
        client_id,
        redirect_uri: &redirect_uri,
        state: &state,
        pkce: &pkce,
    });
    if open_browser && has_display(env) && open(&url) {
        eprintln!("Sign in in the browser that opened. If none did, open this URL:");
    } else {
        eprintln!("To sign in, open this URL in a browser on this machine:");
    }
    eprintln!("\n    {url}\n");
    eprintln!(
        "Waiting for the browser to come back to {redirect_uri} (at most {} minutes)...",
        SIGN_IN_LIMIT.as_secs() / 60
    );
    let code = listener.wait_for_code(&state, SIGN_IN_LIMIT).await?;
    Ok(flows::redeem_code(
        http,
        &endpoints.token_endpoint,
        client_id,
        &code,
        &redirect_uri,
        &pkce,
    )
    .await?)
}

fn has_display(env: &Env) -> bool {
    env.get(ENV_DISPLAY).is_some() || env.get(ENV_WAYLAND_DISPLAY).is_some()
}

/// Starts `xdg-open URL`, silenced; whether it could be started.
fn open(url: &str) -> bool {
    let started = Command::new("xdg-open")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match started {
        Ok(mut child) => {
            // Reaped in the background: it exits once the browser has the URL.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            true
        }
        Err(_) => false,
    }
}
