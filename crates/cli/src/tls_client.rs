//! `--ca-file`, `--server-key-sha256` and `--insecure-http` of the client commands and
//! the agent, with their `APPFENCE_*` variables.

use appfence_tls::client::{parse_key_pin, ClientTls};

use crate::args::TlsClientArgs;
use crate::env::Env;
use crate::error::CliError;
use crate::parse::parse_bool;

pub const ENV_CA_FILE: &str = "APPFENCE_CA_FILE";
pub const ENV_SERVER_KEY_SHA256: &str = "APPFENCE_SERVER_KEY_SHA256";
pub const ENV_INSECURE_HTTP: &str = "APPFENCE_INSECURE_HTTP";

/// The flags, else the variables; a bad value names its flag or variable.
pub fn resolve(args: &TlsClientArgs, env: &Env) -> Result<ClientTls, CliError> {
    let ca_file = args.ca_file.clone().or_else(|| {
        env.get(ENV_CA_FILE)
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    let server_key_sha256 = match (&args.server_key_sha256, env.get(ENV_SERVER_KEY_SHA256)) {
        (Some(flag), _) => Some(
            parse_key_pin(flag)
                .map_err(|e| CliError::Usage(format!("invalid --server-key-sha256: {e}")))?,
        ),
        (None, Some(raw)) if !raw.is_empty() => Some(
            parse_key_pin(raw)
                .map_err(|e| CliError::Usage(format!("invalid {ENV_SERVER_KEY_SHA256}: {e}")))?,
        ),
        _ => None,
    };
    let insecure_http = match (args.insecure_http, env.get(ENV_INSECURE_HTTP)) {
        (Some(flag), _) => flag,
        (None, Some(raw)) => parse_bool(raw)
            .map_err(|e| CliError::Usage(format!("invalid {ENV_INSECURE_HTTP}={raw:?}: {e}")))?,
        (None, None) => false,
    };
    Ok(ClientTls {
        ca_file,
        server_key_sha256,
        insecure_http,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_variables_and_bad_values_are_named() {
        let env = Env::from_pairs([
            (ENV_CA_FILE, "/env/ca.pem"),
            (ENV_SERVER_KEY_SHA256, &"AB".repeat(32)),
            (ENV_INSECURE_HTTP, "true"),
        ]);
        let t = resolve(&TlsClientArgs::default(), &env).unwrap();
        assert_eq!(t.ca_file.unwrap().to_str(), Some("/env/ca.pem"));
        assert_eq!(t.server_key_sha256.unwrap(), "ab".repeat(32));
        assert!(t.insecure_http);
        let flags = TlsClientArgs {
            ca_file: Some("/flag/ca.pem".into()),
            server_key_sha256: None,
            insecure_http: Some(false),
        };
        let t = resolve(&flags, &env).unwrap();
        assert_eq!(t.ca_file.unwrap().to_str(), Some("/flag/ca.pem"));
        assert!(!t.insecure_http);
        let bad = Env::from_pairs([(ENV_SERVER_KEY_SHA256, "xyz")]);
        let e = resolve(&TlsClientArgs::default(), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(ENV_SERVER_KEY_SHA256) && e.contains("64 digits"),
            "{e}"
        );
    }
}
