//! Settings of `serve` (and the data directory of `app create`), layered: command-line
//! flag, then `APPFENCE_*` variable, then the TOML config file, then the default.
//!
//! Each setting has one parser, used for all three sources, so a value means the same
//! wherever it is written; errors name where the bad value came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use appfence_proto::agent::EnforcementMode;
use appfence_server::access::AccessSpec;
use appfence_server::disk_space::FreeSpaceWarning;
use appfence_server::ServerConfig;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::access_config::{access_spec, AuthFile, DeviceGroupFile, RbacFile};
use crate::args::{OfflineArgs, ServeArgs};
use crate::duration::{parse_delay, parse_duration};
use crate::env::{Env, ENV_CREDENTIALS_DIRECTORY};
use crate::error::CliError;
use crate::parse::{
    check_demo_devices, parse_agent_mode, parse_bool, parse_database_url, parse_demo_devices,
    parse_free_space_warning, parse_ip, parse_ip_list, parse_listen, parse_log_level,
    parse_optional_period, parse_public_url, parse_refresh_interval,
};

pub const ENV_CONFIG: &str = "APPFENCE_CONFIG";
pub const ENV_LISTEN: &str = "APPFENCE_LISTEN";
pub const ENV_DATA_DIR: &str = "APPFENCE_DATA_DIR";
pub const ENV_PUBLIC_URL: &str = "APPFENCE_PUBLIC_URL";
pub const ENV_DEMO: &str = "APPFENCE_DEMO";
pub const ENV_DEMO_DEVICES: &str = "APPFENCE_DEMO_DEVICES";
pub const ENV_DEMO_STEP_DELAY: &str = "APPFENCE_DEMO_STEP_DELAY";
pub const ENV_PENDING_TIMEOUT: &str = "APPFENCE_ACTION_PENDING_TIMEOUT";
pub const ENV_INPROGRESS_TIMEOUT: &str = "APPFENCE_ACTION_INPROGRESS_TIMEOUT";
pub const ENV_LOG_LEVEL: &str = "APPFENCE_LOG_LEVEL";
pub const ENV_AGENT_MODE: &str = "APPFENCE_AGENT_MODE";
pub const ENV_KEY_FILE: &str = "APPFENCE_KEY_FILE";
pub const ENV_ALLOW_GROUP_READ: &str = "APPFENCE_ALLOW_GROUP_READ";
pub const ENV_SIGNING_KEY_ROTATION: &str = "APPFENCE_SIGNING_KEY_ROTATION";
pub const ENV_RETENTION: &str = "APPFENCE_RETENTION";
pub const ENV_ALERT_GROUP_WINDOW: &str = "APPFENCE_ALERT_GROUP_WINDOW";
pub const ENV_ALERT_ON_MONITOR: &str = "APPFENCE_ALERT_ON_MONITOR";
pub const ENV_ALERT_AFTER_SILENCE: &str = "APPFENCE_ALERT_AFTER_SILENCE";
pub const ENV_KEY_REFRESH_INTERVAL: &str = "APPFENCE_KEY_REFRESH_INTERVAL";
pub const ENV_TRUSTED_PROXIES: &str = "APPFENCE_TRUSTED_PROXIES";
pub const ENV_METRICS_LISTEN: &str = "APPFENCE_METRICS_LISTEN";
pub const ENV_DATABASE_URL: &str = "APPFENCE_DATABASE_URL";
pub const ENV_DISK_FREE_WARNING: &str = "APPFENCE_DISK_FREE_WARNING";
pub const ENV_TLS_CERT: &str = "APPFENCE_TLS_CERT";
pub const ENV_LOG_FORMAT: &str = "APPFENCE_LOG_FORMAT";
pub const ENV_MAX_CONNECTIONS: &str = "APPFENCE_MAX_CONNECTIONS";
pub const ENV_HEADER_READ_TIMEOUT: &str = "APPFENCE_HEADER_READ_TIMEOUT";
pub const ENV_TLS_KEY: &str = "APPFENCE_TLS_KEY";
pub use crate::tls_client::ENV_INSECURE_HTTP;

pub const DEFAULT_DEMO_DEVICES: u32 = 5;
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The key file's name in a systemd credentials directory (`LoadCredential=master.key:...`).
pub const CREDENTIAL_KEY_FILE: &str = "master.key";

/// The database file inside the data directory.
pub const DB_FILE: &str = "appfence.db";

/// Everything `serve` needs, resolved.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub server: ServerConfig,
    pub demo: bool,
    pub demo_devices: u32,
    /// How long a simulated device takes to acknowledge an action (→ `InProgress`), and
    /// again to complete it (→ `Succeeded`).
    pub demo_step_delay: Duration,
    pub log_level: String,
    pub log_format: crate::args::LogFormat,
    /// The config file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// PostgreSQL instead of SQLite in the data directory.
    pub database_url: Option<appfence_proto::Secret>,
}

pub const DEFAULT_DEMO_STEP_DELAY: Duration = Duration::from_secs(1);

/// The config file. Unknown keys are refused, so a typo cannot silently fall back to a
/// default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, deserialize_with = "de_with::<_, ListenParser>")]
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_with::<_, PublicUrlParser>")]
    pub public_url: Option<String>,
    pub demo: Option<bool>,
    #[serde(default, deserialize_with = "de_demo_devices")]
    pub demo_devices: Option<u32>,
    #[serde(default, deserialize_with = "de_with::<_, DelayParser>")]
    pub demo_step_delay: Option<Duration>,
    #[serde(default, deserialize_with = "de_with::<_, PeriodParser>")]
    pub retention: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "de_with::<_, DurationParser>")]
    pub alert_group_window: Option<Duration>,
    pub alert_on_monitor: Option<bool>,
    #[serde(default, deserialize_with = "de_with::<_, PeriodParser>")]
    pub alert_after_silence: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "de_with::<_, DurationParser>")]
    pub action_pending_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_with::<_, DurationParser>")]
    pub action_inprogress_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_with::<_, LogLevelParser>")]
    pub log_level: Option<String>,
    #[serde(default, deserialize_with = "de_with::<_, LogFormatParser>")]
    pub log_format: Option<crate::args::LogFormat>,
    #[serde(default, deserialize_with = "de_with::<_, AgentModeParser>")]
    pub agent_mode: Option<EnforcementMode>,
    pub key_file: Option<PathBuf>,
    pub allow_group_read: Option<bool>,
    #[serde(default, deserialize_with = "de_with::<_, PeriodParser>")]
    pub signing_key_rotation: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "de_with::<_, RefreshParser>")]
    pub key_refresh_interval: Option<Duration>,
    /// `[sign_in_throttle]`: lockouts and per-address limits of failed sign-ins.
    pub sign_in_throttle: Option<SignInThrottleFile>,
    #[serde(default, deserialize_with = "de_ips")]
    pub trusted_proxies: Option<Vec<std::net::IpAddr>>,
    #[serde(default, deserialize_with = "de_with::<_, ListenParser>")]
    pub metrics_listen: Option<SocketAddr>,
    /// Warn when the data directory's disk has less free space than this.
    #[serde(default, deserialize_with = "de_with::<_, FreeSpaceParser>")]
    pub disk_free_warning: Option<FreeSpaceWarning>,
    pub max_connections: Option<u32>,
    #[serde(default, deserialize_with = "de_with::<_, DurationParser>")]
    pub header_read_timeout: Option<Duration>,
    /// HTTPS: the certificate and its key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP off loopback, behind a TLS-terminating proxy.
    pub insecure_http: Option<bool>,
    /// `postgres://...`: several replicas on one PostgreSQL database.
    #[serde(default, deserialize_with = "de_with::<_, DatabaseUrlParser>")]
    pub database_url: Option<appfence_proto::Secret>,
    /// `[rate_limits]`: calls per caller and API (MDE's defaults: 100 a minute, 1,500 an hour).
    pub rate_limits: Option<RateLimitsFile>,
    /// `[[auth.issuers]]`: external OpenID Connect issuers.
    pub auth: Option<AuthFile>,
    /// `[[rbac.roles]]`: portal roles of users.
    pub rbac: Option<RbacFile>,
    /// `[[device_groups]]`.
    #[serde(default)]
    pub device_groups: Vec<Spanned<DeviceGroupFile>>,
    /// The three sections above, with config lines, filled by [`FileConfig::parse`].
    #[serde(skip)]
    pub access: AccessSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsFile {
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
}

/// `[sign_in_throttle]`; every key is optional (Entra-like defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInThrottleFile {
    pub account_failures: Option<u32>,
    #[serde(default, deserialize_with = "de_with::<_, DurationParser>")]
    pub failure_window: Option<Duration>,
    #[serde(default, deserialize_with = "de_with::<_, DurationParser>")]
    pub lockout: Option<Duration>,
    #[serde(default, deserialize_with = "de_with::<_, DurationParser>")]
    pub max_lockout: Option<Duration>,
    pub address_failures: Option<u32>,
    #[serde(default, deserialize_with = "de_with::<_, DurationParser>")]
    pub address_window: Option<Duration>,
}

impl SignInThrottleFile {
    fn apply(&self, p: &mut appfence_core::sign_in_throttle::ThrottlePolicy) -> Result<(), String> {
        for (name, value, slot) in [
            (
                "account_failures",
                self.account_failures,
                &mut p.account_failures,
            ),
            (
                "address_failures",
                self.address_failures,
                &mut p.address_failures,
            ),
        ] {
            match value {
                Some(0) => return Err(format!("sign_in_throttle.{name} must be at least 1")),
                Some(v) => *slot = v,
                None => {}
            }
        }
        for (name, value, slot) in [
            ("failure_window", self.failure_window, &mut p.failure_window),
            ("lockout", self.lockout, &mut p.lockout),
            ("max_lockout", self.max_lockout, &mut p.max_lockout),
            ("address_window", self.address_window, &mut p.address_window),
        ] {
            match value {
                Some(d) if d.is_zero() => {
                    return Err(format!("sign_in_throttle.{name} must be longer than 0"))
                }
                Some(d) => *slot = d,
                None => {}
            }
        }
        if p.max_lockout < p.lockout {
            return Err("sign_in_throttle.max_lockout must be at least lockout".into());
        }
        Ok(())
    }
}

impl RateLimitsFile {
    /// Applies the file's limits over `policy`; a zero limit would refuse every call.
    fn apply(&self, policy: &mut appfence_core::ratelimit::RateLimitPolicy) -> Result<(), String> {
        for (name, value, slot) in [
            ("per_minute", self.per_minute, &mut policy.per_minute),
            ("per_hour", self.per_hour, &mut policy.per_hour),
        ] {
            match value {
                Some(0) => return Err(format!("rate_limits.{name} must be at least 1")),
                Some(v) => *slot = v,
                None => {}
            }
        }
        Ok(())
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Self::parse(&text)
            .map_err(|e| CliError::Usage(format!("config file {}: {e}", path.display())))
    }

    /// Parses TOML text; the error names the line (and the key, for unknown keys).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut file: FileConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        file.access = access_spec(
            text,
            file.auth.as_ref(),
            file.rbac.as_ref(),
            &file.device_groups,
        )?;
        Ok(file)
    }

    /// The file named by `--config` or `APPFENCE_CONFIG`, or an empty one.
    fn for_args(flag: Option<&Path>, env: &Env) -> Result<Self, CliError> {
        match config_path(flag, env) {
            Some(path) => Self::load(&path),
            None => Ok(FileConfig::default()),
        }
    }
}

/// Where and why a file does not parse, as `line 3, column 8 (key): message`. Not toml's
/// own rendering: it quotes the line, and a line may hold a password (`database_url`).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    let key = text[line_start..]
        .lines()
        .next()
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty());
    match key {
        Some(k) => format!("line {line}, column {column} ({k}): {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// The config file named by `--config` or `APPFENCE_CONFIG`.
fn config_path(flag: Option<&Path>, env: &Env) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| env.get(ENV_CONFIG).map(PathBuf::from))
}

/// The settings every command that opens the data directory shares, from their flags
/// (`None`: not given), the environment and the file.
struct CommonFlags {
    data_dir: Option<PathBuf>,
    database_url: Option<appfence_proto::Secret>,
    key_file: Option<PathBuf>,
    allow_group_read: Option<bool>,
    signing_key_rotation: Option<Option<Duration>>,
    key_refresh_interval: Option<Duration>,
}

/// The server configuration of the data directory, its key file and the keys' timing.
fn resolve_common(
    flags: CommonFlags,
    env: &Env,
    file: &FileConfig,
) -> Result<(ServerConfig, Option<appfence_proto::Secret>), CliError> {
    // Not `layer`: its errors quote the value, and this one holds a password.
    let database_url = match (flags.database_url, env.get(ENV_DATABASE_URL)) {
        (Some(flag), _) => Some(
            parse_database_url(flag.expose())
                .map_err(|e| CliError::Usage(format!("--database-url: {e}")))?,
        ),
        (None, Some(raw)) => Some(
            parse_database_url(raw)
                .map_err(|e| CliError::Usage(format!("invalid {ENV_DATABASE_URL}: {e}")))?,
        ),
        (None, None) => file.database_url.clone(),
    };
    let mut server = ServerConfig {
        data_dir: resolve_data_dir(flags.data_dir, env, file),
        ..ServerConfig::default()
    };
    server.allow_group_read = layer(
        flags.allow_group_read,
        env,
        ENV_ALLOW_GROUP_READ,
        parse_bool,
        file.allow_group_read,
    )?
    .unwrap_or(false);
    server.key_file = layer(
        flags.key_file,
        env,
        ENV_KEY_FILE,
        |s| Ok(PathBuf::from(s)),
        file.key_file.clone(),
    )?
    .or_else(|| credential_key_file(env));
    if let Some(v) = layer(
        flags.signing_key_rotation,
        env,
        ENV_SIGNING_KEY_ROTATION,
        parse_optional_period,
        file.signing_key_rotation,
    )? {
        server.signing_key_rotation = v;
    }
    if let Some(v) = layer(
        flags.key_refresh_interval,
        env,
        ENV_KEY_REFRESH_INTERVAL,
        parse_refresh_interval,
        file.key_refresh_interval,
    )? {
        server.key_refresh_interval = v;
    }
    if let Some(t) = &file.sign_in_throttle {
        t.apply(&mut server.sign_in_throttle)
            .map_err(|e| CliError::Usage(format!("config file: {e}")))?;
    }
    Ok((server, database_url))
}

/// The key file systemd hands the service (`LoadCredential=master.key:/etc/...`), if
/// there is one.
fn credential_key_file(env: &Env) -> Option<PathBuf> {
    let dir = env.get(ENV_CREDENTIALS_DIRECTORY)?;
    let path = Path::new(dir).join(CREDENTIAL_KEY_FILE);
    path.is_file().then_some(path)
}

/// Refuses a config file others can reach (it names the data directory and the key
/// file, and may name issuers and roles).
fn check_config_file(path: Option<&Path>, allow_group_read: bool) -> Result<(), CliError> {
    match path {
        Some(p) => appfence_server::at_rest::private_paths::check_existing(p, allow_group_read)
            .map_err(CliError::Usage),
        None => Ok(()),
    }
}

/// Resolves the settings of `serve`.
pub fn resolve_serve(args: &ServeArgs, env: &Env) -> Result<ServeSettings, CliError> {
    let file = FileConfig::for_args(args.config.as_deref(), env)?;
    let (mut server, database_url) = resolve_common(
        CommonFlags {
            data_dir: args.data_dir.clone(),
            database_url: args.database_url.clone(),
            key_file: args.key_file.clone(),
            allow_group_read: args.allow_group_read,
            signing_key_rotation: args.signing_key_rotation,
            key_refresh_interval: args.key_refresh_interval,
        },
        env,
        &file,
    )?;
    let config_path = config_path(args.config.as_deref(), env);
    check_config_file(config_path.as_deref(), server.allow_group_read)?;
    if let Some(v) = layer(args.listen, env, ENV_LISTEN, parse_listen, file.listen)? {
        server.listen = v;
    }
    server.public_url = layer(
        args.public_url.clone(),
        env,
        ENV_PUBLIC_URL,
        parse_public_url,
        file.public_url,
    )?;
    if let Some(v) = layer(
        args.retention,
        env,
        ENV_RETENTION,
        parse_optional_period,
        file.retention,
    )? {
        server.retention = v;
    }
    if let Some(v) = layer(
        args.alert_group_window,
        env,
        ENV_ALERT_GROUP_WINDOW,
        parse_duration,
        file.alert_group_window,
    )? {
        server.alerts.group_window = v;
    }
    if let Some(v) = layer(
        args.alert_on_monitor,
        env,
        ENV_ALERT_ON_MONITOR,
        parse_bool,
        file.alert_on_monitor,
    )? {
        server.alerts.monitor_alerts = v;
    }
    if let Some(v) = layer(
        args.alert_after_silence,
        env,
        ENV_ALERT_AFTER_SILENCE,
        parse_optional_period,
        file.alert_after_silence,
    )? {
        server.silence_alert_after = v;
    }
    if let Some(v) = layer(
        args.action_pending_timeout,
        env,
        ENV_PENDING_TIMEOUT,
        parse_duration,
        file.action_pending_timeout,
    )? {
        server.action_pending_timeout = v;
    }
    if let Some(v) = layer(
        args.action_inprogress_timeout,
        env,
        ENV_INPROGRESS_TIMEOUT,
        parse_duration,
        file.action_inprogress_timeout,
    )? {
        server.action_inprogress_timeout = v;
    }
    if let Some(v) = layer(
        args.agent_mode,
        env,
        ENV_AGENT_MODE,
        parse_agent_mode,
        file.agent_mode,
    )? {
        server.agent_mode = v;
    }
    let flag_proxies = (!args.trusted_proxies.is_empty()).then(|| args.trusted_proxies.clone());
    server.trusted_proxies = layer(
        flag_proxies,
        env,
        ENV_TRUSTED_PROXIES,
        parse_ip_list,
        file.trusted_proxies.clone(),
    )?
    .unwrap_or_default();
    server.metrics_listen = layer(
        args.metrics_listen,
        env,
        ENV_METRICS_LISTEN,
        parse_listen,
        file.metrics_listen,
    )?;
    if let Some(v) = layer(
        args.disk_free_warning,
        env,
        ENV_DISK_FREE_WARNING,
        parse_free_space_warning,
        file.disk_free_warning,
    )? {
        server.disk_free_warning = v;
    }
    let path = |s: &str| Ok(PathBuf::from(s));
    let tls_cert = layer(
        args.tls_cert.clone(),
        env,
        ENV_TLS_CERT,
        path,
        file.tls_cert.clone(),
    )?;
    let tls_key = layer(
        args.tls_key.clone(),
        env,
        ENV_TLS_KEY,
        path,
        file.tls_key.clone(),
    )?;
    server.tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(appfence_tls::server::TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(CliError::Usage(
                "a TLS certificate needs its key: give --tls-key (APPFENCE_TLS_KEY, tls_key) too"
                    .into(),
            ))
        }
        (None, Some(_)) => return Err(CliError::Usage(
            "a TLS key needs its certificate: give --tls-cert (APPFENCE_TLS_CERT, tls_cert) too"
                .into(),
        )),
    };
    server.insecure_http = layer(
        args.insecure_http,
        env,
        ENV_INSECURE_HTTP,
        parse_bool,
        file.insecure_http,
    )?
    .unwrap_or(false);
    if let Some(n) = layer(
        args.max_connections,
        env,
        ENV_MAX_CONNECTIONS,
        parse_max_connections,
        file.max_connections,
    )? {
        if n == 0 {
            return Err(CliError::Usage("max_connections must be at least 1".into()));
        }
        server.connection_limits.max_connections = n as usize;
    }
    if let Some(d) = layer(
        args.header_read_timeout,
        env,
        ENV_HEADER_READ_TIMEOUT,
        parse_duration,
        file.header_read_timeout,
    )? {
        server.connection_limits.header_read = d;
    }
    server.access = file.access.clone();
    if let Some(limits) = &file.rate_limits {
        limits
            .apply(&mut server.rate_limits)
            .map_err(|e| CliError::Usage(format!("config file: {e}")))?;
    }
    let demo = layer(args.demo, env, ENV_DEMO, parse_bool, file.demo)?.unwrap_or(false);
    let demo_devices = layer(
        args.demo_devices,
        env,
        ENV_DEMO_DEVICES,
        parse_demo_devices,
        file.demo_devices,
    )?
    .unwrap_or(DEFAULT_DEMO_DEVICES);
    let demo_step_delay = layer(
        args.demo_step_delay,
        env,
        ENV_DEMO_STEP_DELAY,
        parse_delay,
        file.demo_step_delay,
    )?
    .unwrap_or(DEFAULT_DEMO_STEP_DELAY);
    let log_level = layer(
        args.log_level.clone(),
        env,
        ENV_LOG_LEVEL,
        parse_log_level,
        file.log_level,
    )?
    .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
    let log_format = layer(
        args.log_format,
        env,
        ENV_LOG_FORMAT,
        crate::parse::parse_log_format,
        file.log_format,
    )?
    .unwrap_or_default();
    Ok(ServeSettings {
        log_format,
        server,
        demo,
        demo_devices,
        demo_step_delay,
        log_level,
        config_path,
        database_url,
    })
}

/// The server configuration for commands that work on the data directory without a
/// server (`app`, `user`, `keys`, ...): its data directory, key file and key timing,
/// found as `serve` finds them.
pub fn resolve_offline(
    offline: &OfflineArgs,
    env: &Env,
) -> Result<(ServerConfig, Option<appfence_proto::Secret>), CliError> {
    let file = FileConfig::for_args(offline.config.as_deref(), env)?;
    let (server, database_url) = resolve_common(
        CommonFlags {
            data_dir: offline.data_dir.clone(),
            database_url: offline.database_url.clone(),
            key_file: offline.key_file.clone(),
            allow_group_read: offline.allow_group_read.then_some(true),
            signing_key_rotation: None,
            key_refresh_interval: None,
        },
        env,
        &file,
    )?;
    check_config_file(
        config_path(offline.config.as_deref(), env).as_deref(),
        server.allow_group_read,
    )?;
    Ok((server, database_url))
}

fn resolve_data_dir(flag: Option<PathBuf>, env: &Env, file: &FileConfig) -> PathBuf {
    flag.or_else(|| env.get(ENV_DATA_DIR).map(PathBuf::from))
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| ServerConfig::default().data_dir)
}

fn parse_max_connections(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("{s:?} is not a number of connections (1 or more)"))
}

/// Flag, else environment variable (parsed here, so its error names the variable),
/// else file value.
fn layer<T>(
    flag: Option<T>,
    env: &Env,
    var: &str,
    parse: fn(&str) -> Result<T, String>,
    file: Option<T>,
) -> Result<Option<T>, CliError> {
    if flag.is_some() {
        return Ok(flag);
    }
    if let Some(raw) = env.get(var) {
        return parse(raw)
            .map(Some)
            .map_err(|e| CliError::Usage(format!("invalid {var}={raw:?}: {e}")));
    }
    Ok(file)
}

// --- file deserializers that reuse the parsers (serde needs a type per parser) ---

trait StrParser {
    type Out;
    fn parse(s: &str) -> Result<Self::Out, String>;
}
struct ListenParser;
struct PublicUrlParser;
struct DurationParser;
struct LogLevelParser;
struct AgentModeParser;
struct PeriodParser;
struct DatabaseUrlParser;
impl StrParser for DatabaseUrlParser {
    type Out = appfence_proto::Secret;
    fn parse(s: &str) -> Result<appfence_proto::Secret, String> {
        parse_database_url(s)
    }
}
struct DelayParser;
struct FreeSpaceParser;
struct LogFormatParser;
impl StrParser for LogFormatParser {
    type Out = crate::args::LogFormat;
    fn parse(s: &str) -> Result<crate::args::LogFormat, String> {
        crate::parse::parse_log_format(s)
    }
}
impl StrParser for FreeSpaceParser {
    type Out = FreeSpaceWarning;
    fn parse(s: &str) -> Result<FreeSpaceWarning, String> {
        parse_free_space_warning(s)
    }
}
impl StrParser for DelayParser {
    type Out = Duration;
    fn parse(s: &str) -> Result<Duration, String> {
        parse_delay(s)
    }
}
struct RefreshParser;
impl StrParser for PeriodParser {
    type Out = Option<Duration>;
    fn parse(s: &str) -> Result<Option<Duration>, String> {
        parse_optional_period(s)
    }
}
impl StrParser for RefreshParser {
    type Out = Duration;
    fn parse(s: &str) -> Result<Duration, String> {
        parse_refresh_interval(s)
    }
}
impl StrParser for AgentModeParser {
    type Out = EnforcementMode;
    fn parse(s: &str) -> Result<EnforcementMode, String> {
        parse_agent_mode(s)
    }
}
impl StrParser for ListenParser {
    type Out = SocketAddr;
    fn parse(s: &str) -> Result<SocketAddr, String> {
        parse_listen(s)
    }
}
impl StrParser for PublicUrlParser {
    type Out = String;
    fn parse(s: &str) -> Result<String, String> {
        parse_public_url(s)
    }
}
impl StrParser for DurationParser {
    type Out = Duration;
    fn parse(s: &str) -> Result<Duration, String> {
        parse_duration(s)
    }
}
impl StrParser for LogLevelParser {
    type Out = String;
    fn parse(s: &str) -> Result<String, String> {
        parse_log_level(s)
    }
}

fn de_with<'de, D: Deserializer<'de>, P: StrParser>(d: D) -> Result<Option<P::Out>, D::Error> {
    let s = String::deserialize(d)?;
    P::parse(&s).map(Some).map_err(serde::de::Error::custom)
}

fn de_ips<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<std::net::IpAddr>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|s| parse_ip(s))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_demo_devices<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = u32::deserialize(d)?;
    check_demo_devices(n)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs::default()
    }

    /// A private config file (as the server requires).
    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::tests::private_tempdir();
        let path = dir.path().join("appfence.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (dir, path)
    }

    fn usage(r: Result<ServeSettings, CliError>) -> String {
        match r {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_without_any_source() {
        let s = resolve_serve(&args(), &Env::default()).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.server.data_dir, PathBuf::from("./appfence-data"));
        assert_eq!(s.server.public_url, None);
        assert_eq!(
            s.server.action_pending_timeout,
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(s.server.action_inprogress_timeout, Duration::from_secs(600));
        assert!(!s.demo);
        assert_eq!(s.demo_devices, 5);
        assert_eq!(s.log_level, "info");
        assert_eq!(s.server.agent_mode, EnforcementMode::Enforce);
    }

    #[test]
    fn agent_mode_layers_like_every_setting() {
        let (_dir, path) = file_with("agent_mode = \"monitor\"\n");
        let env = Env::from_pairs([(ENV_CONFIG, path.to_str().unwrap())]);
        let s = resolve_serve(&args(), &env).unwrap();
        assert_eq!(s.server.agent_mode, EnforcementMode::Monitor, "file");
        let env = Env::from_pairs([
            (ENV_CONFIG, path.to_str().unwrap()),
            (ENV_AGENT_MODE, "Enforce"),
        ]);
        let s = resolve_serve(&args(), &env).unwrap();
        assert_eq!(
            s.server.agent_mode,
            EnforcementMode::Enforce,
            "env beats file"
        );
        let mut a = args();
        a.agent_mode = Some(EnforcementMode::Monitor);
        let s = resolve_serve(&a, &env).unwrap();
        assert_eq!(
            s.server.agent_mode,
            EnforcementMode::Monitor,
            "flag beats env"
        );
        let m = usage(resolve_serve(
            &args(),
            &Env::from_pairs([(ENV_AGENT_MODE, "audit")]),
        ));
        assert!(m.starts_with("invalid APPFENCE_AGENT_MODE="), "{m}");
        let e = FileConfig::parse("agent_mode = \"off\"\n").unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("enforce or monitor"),
            "{e}"
        );
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let (_dir, path) = file_with(
            r#"
listen = "127.0.0.1:7001"
data_dir = "/from/file"
public_url = "https://file.example.com/"
action_pending_timeout = "1d"
action_inprogress_timeout = "5m"
demo = true
demo_devices = 3
demo_step_delay = "250ms"
log_level = "warn"
disk_free_warning = "10%"
"#,
        );
        let env = Env::from_pairs([
            (ENV_CONFIG, path.to_str().unwrap()),
            (ENV_LISTEN, "127.0.0.1:7002"),
            (ENV_DATA_DIR, "/from/env"),
            (ENV_INPROGRESS_TIMEOUT, "90s"),
            (ENV_DEMO_DEVICES, "7"),
        ]);
        let mut a = args();
        a.listen = Some("127.0.0.1:7003".parse().unwrap());
        a.demo_devices = Some(9);
        let s = resolve_serve(&a, &env).unwrap();
        assert_eq!(
            s.server.listen,
            "127.0.0.1:7003".parse().unwrap(),
            "flag wins"
        );
        assert_eq!(s.demo_devices, 9, "flag wins");
        assert_eq!(
            s.demo_step_delay,
            Duration::from_millis(250),
            "file beats default"
        );
        assert_eq!(
            s.server.data_dir,
            PathBuf::from("/from/env"),
            "env beats file"
        );
        assert_eq!(
            s.server.action_inprogress_timeout,
            Duration::from_secs(90),
            "env beats file"
        );
        assert_eq!(
            s.server.public_url.as_deref(),
            Some("https://file.example.com"),
            "file beats default"
        );
        assert_eq!(s.server.action_pending_timeout, Duration::from_secs(86_400));
        assert!(s.demo);
        assert_eq!(s.log_level, "warn");
        assert_eq!(
            s.server.disk_free_warning,
            FreeSpaceWarning::Percent(10),
            "file beats default"
        );
        let env_size = Env::from_pairs([
            (ENV_CONFIG, path.to_str().unwrap()),
            (ENV_DISK_FREE_WARNING, "1GiB"),
        ]);
        let sized = resolve_serve(&args(), &env_size).unwrap();
        assert_eq!(
            sized.server.disk_free_warning,
            FreeSpaceWarning::Bytes(1 << 30),
            "env beats file"
        );
        let env_bad = Env::from_pairs([(ENV_DISK_FREE_WARNING, "lots")]);
        let e = resolve_serve(&args(), &env_bad).unwrap_err().to_string();
        assert!(
            e.contains(ENV_DISK_FREE_WARNING) && e.contains("256MiB"),
            "{e}"
        );

        // Without the flag, the environment wins over the file.
        let s = resolve_serve(&args(), &env).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(s.demo_devices, 7);
    }

    #[test]
    fn the_config_flag_beats_the_config_variable() {
        let (_d1, flag_file) = file_with("demo_devices = 11\n");
        let (_d2, env_file) = file_with("demo_devices = 22\n");
        let env = Env::from_pairs([(ENV_CONFIG, env_file.to_str().unwrap())]);
        let mut a = args();
        a.config = Some(flag_file);
        assert_eq!(resolve_serve(&a, &env).unwrap().demo_devices, 11);
        assert_eq!(resolve_serve(&args(), &env).unwrap().demo_devices, 22);
    }

    #[test]
    fn an_explicit_false_flag_overrides_the_environment() {
        let env = Env::from_pairs([(ENV_DEMO, "yes")]);
        assert!(resolve_serve(&args(), &env).unwrap().demo);
        let mut a = args();
        a.demo = Some(false);
        assert!(!resolve_serve(&a, &env).unwrap().demo);
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        for (var, value) in [
            (ENV_LISTEN, "localhost"),
            (ENV_PENDING_TIMEOUT, "3"),
            (ENV_DEMO, "maybe"),
            (ENV_DEMO_DEVICES, "100001"),
            (ENV_PUBLIC_URL, "example.com"),
            (ENV_LOG_LEVEL, "info,[[["),
        ] {
            let m = usage(resolve_serve(&args(), &Env::from_pairs([(var, value)])));
            assert!(m.starts_with(&format!("invalid {var}=")), "{m}");
        }
        // Named, but without its value: it holds a password.
        let m = usage(resolve_serve(
            &args(),
            &Env::from_pairs([(ENV_DATABASE_URL, "mysql://u:pw-s3cret@db/x")]),
        ));
        assert!(
            m.starts_with(&format!("invalid {ENV_DATABASE_URL}: ")),
            "{m}"
        );
        assert!(!m.contains("pw-s3cret"), "{m}");
        // A flag makes a bad variable irrelevant.
        let mut a = args();
        a.listen = Some("127.0.0.1:1".parse().unwrap());
        assert!(resolve_serve(&a, &Env::from_pairs([(ENV_LISTEN, "localhost")])).is_ok());
    }

    #[test]
    fn rate_limits_come_from_their_table() {
        let f = FileConfig::parse("[rate_limits]\nper_minute = 7\n").unwrap();
        let mut policy = appfence_core::ratelimit::RateLimitPolicy::default();
        f.rate_limits.unwrap().apply(&mut policy).unwrap();
        assert_eq!((policy.per_minute, policy.per_hour), (7, 1500));
        let zero = FileConfig::parse("[rate_limits]\nper_hour = 0\n").unwrap();
        assert_eq!(
            zero.rate_limits.unwrap().apply(&mut policy),
            Err("rate_limits.per_hour must be at least 1".to_string())
        );
        assert!(FileConfig::parse("[rate_limits]\nper_day = 1\n")
            .unwrap_err()
            .contains("per_day"));
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let (_dir, path) = file_with("listen = \"127.0.0.1:1\"\ndata-dir = \"/x\"\n");
        let mut a = args();
        a.config = Some(path.clone());
        let m = usage(resolve_serve(&a, &Env::default()));
        assert!(m.contains(&path.display().to_string()), "{m}");
        assert!(m.contains("unknown field `data-dir`"), "{m}");
        assert!(m.contains("line 2"), "{m}");
    }

    #[test]
    fn a_file_that_does_not_parse_names_the_line() {
        let e = FileConfig::parse("listen = \"127.0.0.1:1\"\n\ndemo = tru\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let e = FileConfig::parse("action_pending_timeout = \"3w\"\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("unknown unit"), "{e}");
        let e = FileConfig::parse("demo_devices = 100001\n").unwrap_err();
        assert!(e.contains("between 0 and"), "{e}");
        let e = FileConfig::parse("demo_devices = \"5\"\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        // The line itself is not quoted: it may hold a password.
        let e = FileConfig::parse(
            "listen = \"127.0.0.1:1\"\ndatabase_url = \"mysql://u:pw-s3cret@h/x\"\n",
        )
        .unwrap_err();
        assert!(e.starts_with("line 2, column 16 (database_url): "), "{e}");
        assert!(
            e.contains("mysql://u:***@h/x is not a PostgreSQL URL") && !e.contains("pw-s3cret"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let mut a = args();
        a.config = Some(PathBuf::from("/nonexistent/appfence.toml"));
        let m = usage(resolve_serve(&a, &Env::default()));
        assert!(
            m.contains("cannot read config file /nonexistent/appfence.toml"),
            "{m}"
        );
    }

    fn offline(data_dir: Option<&str>) -> OfflineArgs {
        OfflineArgs {
            tenant: None,
            data_dir: data_dir.map(PathBuf::from),
            config: None,
            key_file: None,
            allow_group_read: false,
            database_url: None,
        }
    }

    #[test]
    fn offline_commands_find_the_data_dir_and_key_file_like_serve() {
        let (_dir, path) = file_with("data_dir = \"/srv/appfence\"\n");
        let env = Env::from_pairs([(ENV_CONFIG, path.to_str().unwrap())]);
        let (c, _) = resolve_offline(&offline(None), &env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/appfence"));
        assert_eq!(c.key_file(), PathBuf::from("/srv/appfence/master.key"));
        let env2 = Env::from_pairs([(ENV_CONFIG, path.to_str().unwrap()), (ENV_DATA_DIR, "/e")]);
        assert_eq!(
            resolve_offline(&offline(None), &env2).unwrap().0.data_dir,
            PathBuf::from("/e")
        );
        assert_eq!(
            resolve_offline(&offline(Some("/f")), &env2)
                .unwrap()
                .0
                .data_dir,
            PathBuf::from("/f")
        );
    }

    #[test]
    fn the_key_file_layers_and_systemd_credentials_are_found() {
        let creds = tempfile::tempdir().unwrap();
        let env = Env::from_pairs([(ENV_CREDENTIALS_DIRECTORY, creds.path().to_str().unwrap())]);
        // No master.key in the credentials directory: the data directory's.
        let c = resolve_serve(&args(), &env).unwrap();
        assert_eq!(
            c.server.key_file(),
            PathBuf::from("./appfence-data/master.key")
        );
        std::fs::write(creds.path().join("master.key"), "x").unwrap();
        let c = resolve_serve(&args(), &env).unwrap();
        assert_eq!(c.server.key_file(), creds.path().join("master.key"));
        let (_dir, path) = file_with("key_file = \"/etc/appfence/kek\"\n");
        let env = Env::from_pairs([
            (ENV_CREDENTIALS_DIRECTORY, creds.path().to_str().unwrap()),
            (ENV_CONFIG, path.to_str().unwrap()),
        ]);
        assert_eq!(
            resolve_serve(&args(), &env).unwrap().server.key_file(),
            PathBuf::from("/etc/appfence/kek")
        );
        let mut a = args();
        a.key_file = Some("/flag/kek".into());
        assert_eq!(
            resolve_serve(&a, &env).unwrap().server.key_file(),
            PathBuf::from("/flag/kek")
        );
    }

    #[test]
    fn key_timing_and_throttle_settings_are_read() {
        let (_dir, path) = file_with(
            "signing_key_rotation = \"off\"\nkey_refresh_interval = \"2s\"\n\
             [sign_in_throttle]\naccount_failures = 5\nlockout = \"30s\"\n",
        );
        let env = Env::from_pairs([(ENV_CONFIG, path.to_str().unwrap())]);
        let c = resolve_serve(&args(), &env).unwrap().server;
        assert_eq!(c.signing_key_rotation, None);
        assert_eq!(c.key_refresh_interval, Duration::from_secs(2));
        assert_eq!(c.sign_in_throttle.account_failures, 5);
        assert_eq!(c.sign_in_throttle.lockout, Duration::from_secs(30));
        let defaults = resolve_serve(&args(), &Env::default()).unwrap().server;
        assert_eq!(
            defaults.signing_key_rotation,
            Some(Duration::from_secs(90 * 86400))
        );
        let env = Env::from_pairs([(ENV_SIGNING_KEY_ROTATION, "0s")]);
        assert!(usage(resolve_serve(&args(), &env)).contains(ENV_SIGNING_KEY_ROTATION));
        let (_dir, path) =
            file_with("[sign_in_throttle]\nlockout = \"2m\"\nmax_lockout = \"1m\"\n");
        let env = Env::from_pairs([(ENV_CONFIG, path.to_str().unwrap())]);
        assert!(usage(resolve_serve(&args(), &env)).contains("max_lockout"));
    }

    #[test]
    fn a_config_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = file_with("log_level = \"info\"\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let env = Env::from_pairs([(ENV_CONFIG, path.to_str().unwrap())]);
        let m = usage(resolve_serve(&args(), &env));
        assert!(
            m.contains("chmod 600") && m.contains("appfence.toml"),
            "{m}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(usage(resolve_serve(&args(), &env)).contains("--allow-group-read"));
        let mut a = args();
        a.allow_group_read = Some(true);
        resolve_serve(&a, &env).unwrap();
        assert!(resolve_offline(&offline(None), &env).is_err());
    }

    #[test]
    fn parsers_accept_and_normalise() {
        assert_eq!(
            parse_public_url("https://a.example.com/").unwrap(),
            "https://a.example.com"
        );
        assert_eq!(
            parse_public_url("http://10.0.0.1:8080").unwrap(),
            "http://10.0.0.1:8080"
        );
        assert!(parse_public_url("https://").is_err());
        assert!(parse_public_url("ftp://x").is_err());
        assert_eq!(
            parse_listen("[::1]:9000").unwrap(),
            "[::1]:9000".parse().unwrap()
        );
        assert_eq!(
            parse_log_level("info,appfence_server=debug").unwrap(),
            "info,appfence_server=debug"
        );
        assert_eq!(parse_bool("ON"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
    }
}
