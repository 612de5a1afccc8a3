//! `appfence login`: a person signs in, in a browser (authorization code with PKCE,
//! the default) or with a code entered on another device (`--device-code`), and the
//! tokens go to the token cache, filed under the server and tenant, for the API
//! commands to use.

mod browser;
mod device;
pub mod loopback;

use std::process::ExitCode;

use appfence_client::flows::{self, Endpoints};
use appfence_server::oauth::flows::CLI_CLIENT_ID;

use super::connect::{DEFAULT_SERVER, ENV_SERVER, ENV_TENANT};
use super::Ctx;
use crate::args::{LoginArgs, OutputFormat};
use crate::error::CliError;
use crate::output;
use crate::token_cache::{normalise_server, unix_now, CachedLogin, TokenCache};

pub async fn run(args: &LoginArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let pick = |flag: &Option<String>, var: &str| {
        flag.clone()
            .filter(|v| !v.is_empty())
            .or_else(|| ctx.env.get(var).map(str::to_string))
    };
    let server = normalise_server(
        &pick(&args.server, ENV_SERVER).unwrap_or_else(|| DEFAULT_SERVER.to_string()),
    )?;
    let tenant = pick(&args.tenant, ENV_TENANT).ok_or_else(|| {
        CliError::Usage(
            "which tenant? Give --tenant or APPFENCE_TENANT (its id or name; \
             `appfence serve --demo` writes it to DATA_DIR/demo.json as tenantId)"
                .into(),
        )
    })?;
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| CLI_CLIENT_ID.to_string());
    let tls = crate::tls_client::resolve(&args.tls, ctx.env)?;
    tls.check_server_url(&server).map_err(CliError::Usage)?;
    let cache = TokenCache::locate(ctx.env).ok_or_else(|| {
        CliError::Usage(
            "cannot tell where to keep the sign-in: set HOME (or XDG_CONFIG_HOME)".into(),
        )
    })?;
    // A cache that would be refused afterwards is refused before the person signs in.
    cache.load()?;

    let http = appfence_client::http_client(&tls).map_err(|e| CliError::Usage(e.to_string()))?;
    let endpoints = flows::discover(&http, &server, &tenant).await?;
    check_endpoints(&endpoints, &tls)?;
    let started = unix_now();
    let tokens = if args.device_code {
        device::sign_in(&http, &endpoints, &client_id).await?
    } else {
        browser::sign_in(&http, &endpoints, &client_id, !args.no_browser, ctx.env).await?
    };
    let identity = flows::identity(&tokens.access_token);
    let login = CachedLogin {
        server: server.clone(),
        tenant: tenant.clone(),
        tenant_id: identity.tenant_id,
        client_id,
        user: identity.user.unwrap_or_else(|| "(unknown user)".into()),
        token_endpoint: endpoints.token_endpoint.clone(),
        access_token: tokens.access_token,
        expires_at: started.saturating_add(tokens.expires_in),
        refresh_token: tokens.refresh_token,
    };
    let held = cache.lock().await?;
    let mut file = cache.load()?;
    file.upsert(login.clone());
    cache.save(&held, &file)?;
    drop(held);

    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "user": login.user,
            "server": login.server,
            "tenant": login.tenant,
            "tenantId": login.tenant_id,
            "clientId": login.client_id,
            "tokenCache": cache.path(),
            "refreshable": login.refresh_token.is_some(),
        })),
        OutputFormat::Table => format!(
            "Signed in as {} to {} (tenant {})\n",
            login.user, login.server, login.tenant
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    if login.refresh_token.is_none() {
        eprintln!(
            "note: the server gave no refresh token: sign in again when the access token \
             expires (in {} minutes)",
            login.expires_at.saturating_sub(started) / 60
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The discovery document could name any URL: hold its endpoints to the same rule as
/// the server's (https, or http on loopback unless --insecure-http).
fn check_endpoints(
    endpoints: &Endpoints,
    tls: &appfence_tls::client::ClientTls,
) -> Result<(), CliError> {
    let urls = [
        Some(&endpoints.authorization_endpoint),
        Some(&endpoints.token_endpoint),
        endpoints.device_authorization_endpoint.as_ref(),
    ];
    for url in urls.into_iter().flatten() {
        tls.check_server_url(url).map_err(|e| {
            CliError::Failed(format!(
                "the server's discovery document names an endpoint this client will not use: {e}"
            ))
        })?;
    }
    Ok(())
}
