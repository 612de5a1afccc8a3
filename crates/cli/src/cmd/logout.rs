//! `appfence logout`: forgets the sign-in to a server (and tenant), or every sign-in
//! (`--all`: the token cache file goes). Only this machine forgets: the server keeps
//! the refresh token valid until it expires or the user is disabled.

use std::process::ExitCode;

use super::connect::{DEFAULT_SERVER, ENV_SERVER, ENV_TENANT};
use super::Ctx;
use crate::args::{LogoutArgs, OutputFormat};
use crate::error::CliError;
use crate::output;
use crate::token_cache::{normalise_server, CachedLogin, TokenCache};

pub async fn run(args: &LogoutArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let cache = TokenCache::locate(ctx.env).ok_or_else(|| {
        CliError::Usage(
            "cannot tell where the sign-ins are kept: set HOME (or XDG_CONFIG_HOME)".into(),
        )
    })?;
    if args.all {
        return forget_all(&cache, ctx).await;
    }
    let (scope, removed) = {
        let pick = |flag: &Option<String>, var: &str| {
            flag.clone()
                .filter(|v| !v.is_empty())
                .or_else(|| ctx.env.get(var).map(str::to_string))
        };
        let server = normalise_server(
            &pick(&args.server, ENV_SERVER).unwrap_or_else(|| DEFAULT_SERVER.to_string()),
        )?;
        let tenant = pick(&args.tenant, ENV_TENANT);
        let scope = match &tenant {
            Some(t) => format!("{server} (tenant {t})"),
            None => server.clone(),
        };
        (scope, forget(&cache, &server, tenant.as_deref()).await?)
    };
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "from": scope,
            "removed": removed.iter().map(|l| serde_json::json!({
                "user": l.user, "server": l.server, "tenant": l.tenant,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table if removed.is_empty() => {
            format!("Nothing was signed in to {scope}.\n")
        }
        OutputFormat::Table => removed
            .iter()
            .map(|l| format!("Signed out {} from {}\n", l.user, l.place()))
            .collect(),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Removes the sign-ins to `server` (and `tenant`, if given); those removed.
async fn forget(
    cache: &TokenCache,
    server: &str,
    tenant: Option<&str>,
) -> Result<Vec<CachedLogin>, CliError> {
    // Nothing to lock, or create, where nobody ever signed in.
    if !cache.path().exists() {
        return Ok(Vec::new());
    }
    let held = cache.lock().await?;
    let mut file = cache.load()?;
    let gone = file.remove(server, tenant);
    if !gone.is_empty() {
        cache.save(&held, &file)?;
    }
    Ok(gone)
}

/// Deletes the cache file, and says so.
async fn forget_all(cache: &TokenCache, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let path = cache.path().display().to_string();
    let gone = if cache.path().exists() {
        let held = cache.lock().await?;
        // A file that cannot be read (too open, damaged) goes all the same: --all is the
        // way out of it.
        let gone = cache.load().map(|f| f.sessions).unwrap_or_default();
        cache.delete(&held)?.then_some(gone)
    } else {
        None
    };
    let text = match (ctx.format, &gone) {
        (OutputFormat::Json, _) => output::json(&serde_json::json!({
            "tokenCache": path,
            "removed": gone.is_some(),
            "signIns": gone.as_ref().map_or(0, Vec::len),
        })),
        (OutputFormat::Table, None) => {
            format!("Nothing was signed in (no token cache at {path}).\n")
        }
        (OutputFormat::Table, Some(gone)) => {
            let mut text: String = gone
                .iter()
                .map(|l| format!("Signed out {} from {}\n", l.user, l.place()))
                .collect();
            text.push_str(&format!("Removed the token cache {path}.\n"));
            text
        }
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
