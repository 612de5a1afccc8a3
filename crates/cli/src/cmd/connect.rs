//! The API client: an application's credentials from `--server`/`--tenant`/
//! `--client-id`/`--client-secret` or their `APPFENCE_*` variables; without a client
//! secret, the person's sign-in of `appfence login` to that server (and tenant).

use std::sync::Arc;

use appfence_client::{ClientConfig, MdeClient};

use crate::args::ConnectArgs;
use crate::env::Env;
use crate::error::CliError;
use crate::token_cache::{normalise_server, CachedSession, TokenCache};

pub const ENV_SERVER: &str = "APPFENCE_SERVER";
pub const ENV_TENANT: &str = "APPFENCE_TENANT";
pub const ENV_CLIENT_ID: &str = "APPFENCE_CLIENT_ID";
pub const ENV_CLIENT_SECRET: &str = "APPFENCE_CLIENT_SECRET";
pub const ENV_TOKEN_URL: &str = "APPFENCE_TOKEN_URL";
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The client configuration; every missing credential is named in one error.
pub fn client_config(args: &ConnectArgs, env: &Env) -> Result<ClientConfig, CliError> {
    let pick = |flag: &Option<String>, var: &str| {
        flag.clone()
            .filter(|v| !v.is_empty())
            .or_else(|| env.get(var).map(str::to_string))
    };
    let tenant = pick(&args.tenant, ENV_TENANT);
    let client_id = pick(&args.client_id, ENV_CLIENT_ID);
    let client_secret = pick(&args.client_secret, ENV_CLIENT_SECRET);
    let missing: Vec<String> = [
        ("--tenant", ENV_TENANT, tenant.is_none()),
        ("--client-id", ENV_CLIENT_ID, client_id.is_none()),
        (
            "--client-secret",
            ENV_CLIENT_SECRET,
            client_secret.is_none(),
        ),
    ]
    .into_iter()
    .filter(|(_, _, missing)| *missing)
    .map(|(flag, var, _)| format!("{var} (or {flag})"))
    .collect();
    let server = pick(&args.server, ENV_SERVER).unwrap_or_else(|| DEFAULT_SERVER.to_string());
    match (tenant, client_id, client_secret) {
        (Some(tenant), Some(client_id), Some(client_secret)) => Ok(ClientConfig {
            server,
            tenant,
            client_id,
            client_secret,
            token_url: pick(&args.token_url, ENV_TOKEN_URL),
            tls: crate::tls_client::resolve(&args.tls, env)?,
        }),
        _ => Err(CliError::Usage(format!(
            "missing credentials: run `appfence login` to sign in to {server} as a person, or \
             set {} for an application (`appfence app create` registers one; `appfence serve \
             --demo` writes working ones to DATA_DIR/demo.json: tenantId, clientId, \
             clientSecret)",
            missing.join(", ")
        ))),
    }
}

/// The API client: the application of the flags or variables when a client secret is
/// given (as before sign-ins existed), else the person signed in to the server.
pub fn client(args: &ConnectArgs, env: &Env) -> Result<MdeClient, CliError> {
    let has_secret = args.client_secret.as_deref().is_some_and(|s| !s.is_empty())
        || env.get(ENV_CLIENT_SECRET).is_some();
    if !has_secret {
        if let Some(client) = signed_in_client(args, env)? {
            return Ok(client);
        }
    }
    let config = client_config(args, env)?;
    // Only a bad URL can fail here: that is a setting, not a server problem.
    MdeClient::new(config).map_err(|e| CliError::Usage(e.to_string()))
}

/// A client acting as the person signed in to the server (and tenant, if one is
/// given), if there is such a sign-in.
fn signed_in_client(args: &ConnectArgs, env: &Env) -> Result<Option<MdeClient>, CliError> {
    let Some(cache) = TokenCache::locate(env) else {
        return Ok(None);
    };
    let pick = |flag: &Option<String>, var: &str| {
        flag.clone()
            .filter(|v| !v.is_empty())
            .or_else(|| env.get(var).map(str::to_string))
    };
    let server = normalise_server(
        &pick(&args.server, ENV_SERVER).unwrap_or_else(|| DEFAULT_SERVER.to_string()),
    )?;
    let tenant = pick(&args.tenant, ENV_TENANT);
    let file = cache.load()?;
    let Some(i) = file.position(&server, tenant.as_deref())? else {
        return Ok(None);
    };
    let session = CachedSession::new(cache, &file.sessions[i]);
    let tls = crate::tls_client::resolve(&args.tls, env)?;
    MdeClient::for_session(&server, &tls, Arc::new(session))
        .map(Some)
        .map_err(|e| CliError::Usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_environment() {
        let env = Env::from_pairs([
            (ENV_SERVER, "http://env:1"),
            (ENV_TENANT, "t-env"),
            (ENV_CLIENT_ID, "c-env"),
            (ENV_CLIENT_SECRET, "s-env"),
        ]);
        let args = ConnectArgs {
            tenant: Some("t-flag".into()),
            ..Default::default()
        };
        let c = client_config(&args, &env).unwrap();
        assert_eq!(c.server, "http://env:1");
        assert_eq!(c.tenant, "t-flag");
        assert_eq!(c.client_id, "c-env");
        assert_eq!(c.client_secret, "s-env");
        assert_eq!(c.token_url, None);
        assert_eq!(c.token_url(), "http://env:1/t-flag/oauth2/v2.0/token");
    }

    #[test]
    fn the_server_has_a_default() {
        let env = Env::from_pairs([
            (ENV_TENANT, "t"),
            (ENV_CLIENT_ID, "c"),
            (ENV_CLIENT_SECRET, "s"),
        ]);
        assert_eq!(
            client_config(&ConnectArgs::default(), &env).unwrap().server,
            DEFAULT_SERVER
        );
    }

    #[test]
    fn missing_credentials_are_all_named_with_a_hint() {
        let env = Env::from_pairs([(ENV_TENANT, "t")]);
        let Err(CliError::Usage(m)) = client_config(&ConnectArgs::default(), &env) else {
            panic!("expected a usage error")
        };
        assert!(m.contains("APPFENCE_CLIENT_ID (or --client-id)"), "{m}");
        assert!(
            m.contains("APPFENCE_CLIENT_SECRET (or --client-secret)"),
            "{m}"
        );
        assert!(!m.contains("APPFENCE_TENANT"), "{m}");
        assert!(m.contains("demo.json"), "{m}");
        assert!(m.contains("`appfence login`"), "{m}");
    }

    /// A home directory whose token cache holds a sign-in to `server` in tenant `t`.
    async fn home_signed_in_to(server: &str) -> tempfile::TempDir {
        use crate::token_cache::{CacheFile, CachedLogin};
        let home = tempfile::tempdir().unwrap();
        let cache = TokenCache::locate(&Env::from_pairs([(
            crate::env::ENV_HOME,
            home.path().to_str().unwrap(),
        )]))
        .unwrap();
        let held = cache.lock().await.unwrap();
        let mut file = CacheFile::default();
        file.upsert(CachedLogin {
            server: server.into(),
            tenant: "t".into(),
            tenant_id: Some("t-id".into()),
            client_id: "cli".into(),
            user: "ana@corp.example".into(),
            token_endpoint: format!("{server}/t/oauth2/v2.0/token"),
            access_token: "at".into(),
            expires_at: u64::MAX,
            refresh_token: None,
        });
        cache.save(&held, &file).unwrap();
        home
    }

    #[tokio::test]
    async fn without_a_secret_the_sign_in_is_used_and_a_secret_wins() {
        let dir = home_signed_in_to("http://127.0.0.1:9").await;
        let home = dir.path().to_str().unwrap().to_string();
        let signed_in = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                (crate::env::ENV_HOME, home.as_str()),
                (ENV_SERVER, "http://127.0.0.1:9/"),
            ];
            pairs.extend_from_slice(extra);
            format!(
                "{:?}",
                client(&ConnectArgs::default(), &Env::from_pairs(pairs)).unwrap()
            )
        };
        assert!(signed_in(&[]).contains("UserSession"));
        assert!(signed_in(&[(ENV_TENANT, "T-ID")]).contains("UserSession"));
        // A client id alone (a leftover of a demo's variables) does not stop it.
        assert!(signed_in(&[(ENV_CLIENT_ID, "c")]).contains("UserSession"));
        let app = signed_in(&[
            (ENV_TENANT, "t"),
            (ENV_CLIENT_ID, "c"),
            (ENV_CLIENT_SECRET, "s"),
        ]);
        assert!(
            app.contains("ClientCredentials") && !app.contains("\"s\""),
            "{app}"
        );

        // Another server or tenant has no sign-in: the usual error, naming `appfence login`.
        for extra in [
            vec![(ENV_SERVER, "http://127.0.0.1:10")],
            vec![(ENV_TENANT, "other")],
        ] {
            let mut pairs = vec![(crate::env::ENV_HOME, home.as_str())];
            if !extra.iter().any(|(k, _)| *k == ENV_SERVER) {
                pairs.push((ENV_SERVER, "http://127.0.0.1:9"));
            }
            pairs.extend(extra);
            let Err(CliError::Usage(m)) = client(&ConnectArgs::default(), &Env::from_pairs(pairs))
            else {
                panic!("expected a usage error")
            };
            assert!(
                m.contains("run `appfence login` to sign in to http://127.0.0.1:"),
                "{m}"
            );
        }
    }

    #[test]
    fn a_bad_server_url_is_a_usage_error() {
        let args = ConnectArgs {
            server: Some("not a url".into()),
            tenant: Some("t".into()),
            client_id: Some("c".into()),
            client_secret: Some("s".into()),
            token_url: None,
            tls: Default::default(),
        };
        assert!(matches!(
            client(&args, &Env::default()),
            Err(CliError::Usage(_))
        ));
        // Plain HTTP off loopback is refused unless asked for.
        let remote = ConnectArgs {
            server: Some("http://10.1.2.3:8080".into()),
            ..args
        };
        match client(&remote, &Env::default()) {
            Err(CliError::Usage(e)) => assert!(e.contains("--insecure-http"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
