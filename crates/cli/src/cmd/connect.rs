//! The API client, from `--server`/`--tenant`/`--client-id`/`--client-secret` or their
//! `APPFENCE_*` variables.

use appfence_client::{ClientConfig, MdeClient};

use crate::args::ConnectArgs;
use crate::env::Env;
use crate::error::CliError;

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
    match (tenant, client_id, client_secret) {
        (Some(tenant), Some(client_id), Some(client_secret)) => Ok(ClientConfig {
            server: pick(&args.server, ENV_SERVER).unwrap_or_else(|| DEFAULT_SERVER.to_string()),
            tenant,
            client_id,
            client_secret,
            token_url: pick(&args.token_url, ENV_TOKEN_URL),
            tls: crate::tls_client::resolve(&args.tls, env)?,
        }),
        _ => Err(CliError::Usage(format!(
            "missing credentials: set {}. `appfence app create` registers an application; \
             `appfence serve --demo` writes working ones to DATA_DIR/demo.json \
             (tenantId, clientId, clientSecret)",
            missing.join(", ")
        ))),
    }
}

pub fn client(args: &ConnectArgs, env: &Env) -> Result<MdeClient, CliError> {
    let config = client_config(args, env)?;
    // Only a bad URL can fail here: that is a setting, not a server problem.
    MdeClient::new(config).map_err(|e| CliError::Usage(e.to_string()))
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
