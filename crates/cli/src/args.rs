//! The command line, declared with clap's derive API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use appfence_proto::agent::EnforcementMode;

use crate::duration::{parse_delay, parse_duration};
use crate::parse::{
    database_url_arg, parse_agent_mode, parse_demo_devices, parse_free_space_warning, parse_ip,
    parse_listen, parse_log_format, parse_log_level, parse_optional_period, parse_public_url,
    parse_refresh_interval, parse_since, Since,
};

#[derive(Debug, Parser)]
#[command(
    name = "appfence",
    version,
    about = "appfence: restrict application execution on Linux hosts through the Defender for Endpoint machine-actions API",
    propagate_version = true
)]
pub struct Cli {
    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (API, token endpoint, agent gateway).
    Serve(ServeArgs),
    /// Manage application registrations (OAuth clients); works on the data directory
    /// directly, no running server needed.
    #[command(subcommand)]
    App(AppCommand),
    /// Manage local users of the built-in token endpoint (password grant); works on the
    /// data directory directly, no running server needed.
    #[command(subcommand)]
    User(UserCommand),
    /// Sign in as a person (in a browser, or with a code on another device) and keep
    /// the tokens for the API commands, which use them when no client secret is set.
    Login(LoginArgs),
    /// Forget a sign-in of `appfence login` (or every one, with --all).
    Logout(LogoutArgs),
    /// Restrict code execution on a machine (POST /api/machines/{id}/restrictCodeExecution).
    Restrict(ActionArgs),
    /// Lift the restriction (POST /api/machines/{id}/unrestrictCodeExecution).
    Unrestrict(ActionArgs),
    /// List, show and cancel machine actions.
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// List and show machines, their enforcement state and denied executions.
    #[command(subcommand)]
    Machines(MachinesCommand),
    /// Manage file indicators (MDE's indicators API, FileSha256): files every device
    /// blocks or audits, and the allowlist restricted devices let run.
    #[command(subcommand)]
    Indicators(IndicatorsCommand),
    /// List, show and update alerts (MDE's alerts API): what devices blocked or
    /// reported, for triage.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Run the Linux agent: enrol this host, then restrict execution when the server
    /// says so (fanotify; needs root).
    Agent(AgentArgs),
    /// Manage enrolment secrets (what `appfence agent --enroll-secret` takes); works on
    /// the data directory directly, no running server needed.
    #[command(subcommand)]
    EnrollSecret(EnrollSecretCommand),
    /// List, rotate and retire the token signing keys; works on the data directory
    /// directly (running servers pick the change up within key_refresh_interval).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// TLS certificates for trying HTTPS: a lab CA and a server certificate.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Show and change a tenant's settings (the password grant); works on the data
    /// directory directly, no running server needed.
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Show the tenant: id, name, whether its token endpoints accept the password grant.
    Show(OfflineOnlyArgs),
    /// Change the tenant's settings.
    Set(TenantSetArgs),
}

#[derive(Debug, Args)]
pub struct TenantSetArgs {
    /// Whether the token endpoints accept grant_type=password (RFC 9700 deprecates it;
    /// new tenants start with it off, the demo tenant with it on). The console's own
    /// sign-in form is not affected.
    #[arg(long, value_name = "on|off", value_parser = parse_switch, action = clap::ArgAction::Set, required = true)]
    pub password_grant: bool,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{s:?} is neither on nor off")),
    }
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a private CA and a server certificate for these names into a directory,
    /// and print how to point the server and the agents at them.
    Init(TlsInitArgs),
}

#[derive(Debug, Args)]
pub struct TlsInitArgs {
    /// A DNS name or IP address the server is reached by (repeat the flag)
    #[arg(long = "host", value_name = "NAME", required = true)]
    pub hosts: Vec<String>,
    /// The directory to write ca.pem, ca.key, server.pem and server.key into (created
    /// 0700; existing files are never overwritten)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// How long the server certificate is valid
    #[arg(long, value_name = "DAYS", default_value_t = 397)]
    pub days: u32,
}

/// Settings of `serve`. Each is also read from an `APPFENCE_*` variable and from the
/// config file; precedence: flag, then environment, then file, then default.
#[derive(Clone, Debug, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on [env: APPFENCE_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Directory of the database and demo files [env: APPFENCE_DATA_DIR] [default: ./appfence-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Base URL clients reach this server at, used in token issuers and @odata links
    /// [env: APPFENCE_PUBLIC_URL] [default: derived from the listening address]
    #[arg(long, value_name = "URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// TOML file with any of the settings above (keys in snake_case, e.g. data_dir)
    /// [env: APPFENCE_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Provision a demo tenant and app, and run simulated devices [env: APPFENCE_DEMO]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub demo: Option<bool>,
    /// Number of simulated devices with --demo, 0 for none (a second replica)
    /// [env: APPFENCE_DEMO_DEVICES] [default: 5]
    #[arg(long, value_name = "N", value_parser = parse_demo_devices)]
    pub demo_devices: Option<u32>,
    /// Simulated devices take this long to start an action (InProgress) and as long again
    /// to complete it (Succeeded), e.g. 1s, 0s [env: APPFENCE_DEMO_STEP_DELAY] [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_delay)]
    pub demo_step_delay: Option<Duration>,
    /// Final actions (Succeeded, Failed, TimeOut, Cancelled) and denial events older than
    /// this are deleted, e.g. 180d, or off; the audit trail of deleted actions stays
    /// [env: APPFENCE_RETENTION] [default: 180d, as MDE]
    #[arg(long, value_name = "PERIOD", value_parser = parse_optional_period)]
    pub retention: Option<Option<Duration>>,
    /// Denials of the same file on the same device join one open alert while they keep
    /// coming within this window, e.g. 24h [env: APPFENCE_ALERT_GROUP_WINDOW] [default: 24h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub alert_group_window: Option<Duration>,
    /// Monitor mode's would-be denials raise (informational) alerts too
    /// [env: APPFENCE_ALERT_ON_MONITOR] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub alert_on_monitor: Option<bool>,
    /// A restricted device silent for this long raises an alert, e.g. 10m, or off
    /// [env: APPFENCE_ALERT_AFTER_SILENCE] [default: 10m]
    #[arg(long, value_name = "PERIOD", value_parser = parse_optional_period)]
    pub alert_after_silence: Option<Option<Duration>>,
    /// Pending actions older than this time out, e.g. 3d [env: APPFENCE_ACTION_PENDING_TIMEOUT] [default: 3d]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub action_pending_timeout: Option<Duration>,
    /// InProgress actions without news for this long time out, e.g. 10m
    /// [env: APPFENCE_ACTION_INPROGRESS_TIMEOUT] [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub action_inprogress_timeout: Option<Duration>,
    /// Log filter: a level (info, debug) or tracing directives (appfence_server=debug)
    /// [env: APPFENCE_LOG_LEVEL] [default: info]
    #[arg(long, value_name = "FILTER", value_parser = parse_log_level)]
    pub log_level: Option<String>,
    /// Log lines as text, or as one JSON object a line (with the request id and the
    /// error target) [env: APPFENCE_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// What restricted devices do with programs outside the trusted set: enforce (deny
    /// them) or monitor (allow them, report what would have been denied)
    /// [env: APPFENCE_AGENT_MODE] [default: enforce]
    #[arg(long, value_name = "MODE", value_parser = parse_agent_mode)]
    pub agent_mode: Option<EnforcementMode>,
    /// The key-encryption key that seals the signing keys, created 0600 at the first
    /// start [env: APPFENCE_KEY_FILE] [default: $CREDENTIALS_DIRECTORY/master.key if
    /// systemd provides it, else DATA_DIR/master.key]
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Let the group of the data directory, key file and config file read them (never
    /// write; never others) [env: APPFENCE_ALLOW_GROUP_READ]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_group_read: Option<bool>,
    /// Replace the token signing key after it has signed this long, e.g. 90d, or off
    /// [env: APPFENCE_SIGNING_KEY_ROTATION] [default: 90d]
    #[arg(long, value_name = "PERIOD", value_parser = parse_optional_period)]
    pub signing_key_rotation: Option<Option<Duration>>,
    /// How often this server re-reads the signing keys: key rotations and retirements
    /// take effect within it [env: APPFENCE_KEY_REFRESH_INTERVAL] [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_refresh_interval)]
    pub key_refresh_interval: Option<Duration>,
    /// A reverse proxy whose X-Forwarded-For names the client, for per-address limits
    /// (repeat the flag or separate with commas) [env: APPFENCE_TRUSTED_PROXIES]
    #[arg(long = "trusted-proxy", value_name = "IP", value_parser = parse_ip, value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics [env: APPFENCE_METRICS_LISTEN]
    /// [default: off]
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,
    /// Warn (log and metric) when the data directory's disk has less free space than
    /// this: a size (256MiB, 2GiB), a percentage (5%) or off
    /// [env: APPFENCE_DISK_FREE_WARNING] [default: the smaller of 5% and 256MiB]
    #[arg(long, value_name = "SIZE|PERCENT|off", value_parser = parse_free_space_warning)]
    pub disk_free_warning: Option<appfence_server::disk_space::FreeSpaceWarning>,
    /// Most connections open at once; more get a 503 and are closed
    /// [env: APPFENCE_MAX_CONNECTIONS] [default: 16384]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// A connection that has not sent a whole request head within this is closed (also
    /// an idle keep-alive connection), e.g. 10s [env: APPFENCE_HEADER_READ_TIMEOUT]
    /// [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Serve HTTPS with this certificate (PEM, the chain after it), reloaded on SIGHUP;
    /// with --tls-key [env: APPFENCE_TLS_CERT]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, mode 0600) [env: APPFENCE_TLS_KEY]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (only behind a
    /// TLS-terminating proxy) [env: APPFENCE_INSECURE_HTTP]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_http: Option<bool>,
    /// PostgreSQL for several replicas, postgres://user:password@host:5432/db (prefer
    /// the variable: flags show in the process list) [env: APPFENCE_DATABASE_URL]
    /// [default: SQLite in the data directory]
    #[arg(long, value_name = "URL", value_parser = database_url_arg)]
    pub database_url: Option<appfence_proto::Secret>,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Register an application and print its client id and first secret (shown once).
    Create(AppCreateArgs),
    /// List the tenant's applications: client id, name, state, roles, secrets.
    List(OfflineOnlyArgs),
    /// Show an application and its secrets' ids, hints and expiry (never a secret).
    Show(AppRefArgs),
    /// Disable an application: its token requests are refused at once, its tokens
    /// within 30 s on every server.
    Disable(AppRefArgs),
    /// Enable a disabled application again.
    Enable(AppRefArgs),
    /// Delete an application and its secrets: as disable, for good.
    Delete(AppRefArgs),
    /// Add or remove client secrets (rotation: add, switch, remove the old one).
    #[command(subcommand)]
    Secret(AppSecretCommand),
}

#[derive(Debug, Args)]
pub struct AppCreateArgs {
    /// Display name; it appears as `requestor` on the actions the app creates.
    #[arg(long)]
    pub name: String,
    /// Application permission, e.g. Machine.RestrictExecution, Machine.Read.All
    /// (repeat the flag or separate with commas).
    #[arg(long = "role", value_name = "ROLE", required_unless_present = "public", num_args = 1.., value_delimiter = ',')]
    pub roles: Vec<String>,
    /// A public client (a native app or script that cannot keep a secret): it signs
    /// people in with the authorization code + PKCE or device code flow, no secret.
    #[arg(long)]
    pub public: bool,
    /// A redirect URI of the authorization code flow (repeat the flag); loopback URIs
    /// (http://127.0.0.1/..., http://[::1]/..., http://localhost/...) match any port.
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uris: Vec<String>,
    /// How long the first secret works, e.g. 90d (at most 730d)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "180d")]
    pub expires: Duration,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

/// Commands that take only where the data is.
#[derive(Debug, Args)]
pub struct OfflineOnlyArgs {
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Args)]
pub struct AppRefArgs {
    /// The application's client id, or its display name if no other application of
    /// the tenant has it.
    #[arg(value_name = "APP")]
    pub app: String,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Subcommand)]
pub enum AppSecretCommand {
    /// Add a client secret and print it and its id (shown once); the others keep
    /// working.
    Add(AppSecretAddArgs),
    /// Remove a client secret by its id: it gets no token any more (tokens it already
    /// got work until they expire; disable the app to stop those).
    Remove(AppSecretRemoveArgs),
}

#[derive(Debug, Args)]
pub struct AppSecretAddArgs {
    /// The application's client id or display name.
    #[arg(value_name = "APP")]
    pub app: String,
    /// How long the secret works, e.g. 90d (at most 730d)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "180d")]
    pub expires: Duration,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Args)]
pub struct AppSecretRemoveArgs {
    /// The application's client id or display name.
    #[arg(value_name = "APP")]
    pub app: String,
    /// The secret's id, as `app show` lists it.
    #[arg(value_name = "SECRET_ID")]
    pub secret_id: String,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

/// Where commands that work on the data directory without a running server (`app`,
/// `user`, `enroll-secret`) find the database, and which tenant they act on.
#[derive(Debug, Args)]
pub struct OfflineArgs {
    /// Tenant id or name [default: the default tenant, created if needed]
    #[arg(long)]
    pub tenant: Option<String>,
    /// Data directory of the server [env: APPFENCE_DATA_DIR] [default: ./appfence-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's TOML config file, to find its data_dir [env: APPFENCE_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The key-encryption key file [env: APPFENCE_KEY_FILE] [default: as serve]
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Accept a data directory and key file that their group can read
    /// [env: APPFENCE_ALLOW_GROUP_READ]
    #[arg(long)]
    pub allow_group_read: bool,
    /// The server's PostgreSQL database, if it uses one [env: APPFENCE_DATABASE_URL]
    #[arg(long, value_name = "URL", value_parser = database_url_arg)]
    pub database_url: Option<appfence_proto::Secret>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys and their state (signing, next, verifying, retired).
    List(KeysListArgs),
    /// Add a new signing key: published at once, signing after every server has read
    /// it; the current key keeps verifying the tokens it signed until they expire.
    Rotate(KeysRotateArgs),
    /// Retire a key at once (e.g. a compromised one): tokens it signed are refused by
    /// every server within key_refresh_interval. A retired signing key is replaced.
    Retire(KeysRetireArgs),
}

#[derive(Debug, Args)]
pub struct KeysListArgs {
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Args)]
pub struct KeysRotateArgs {
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Args)]
pub struct KeysRetireArgs {
    /// The key id (`kid`) to retire, as `keys list` shows it.
    pub kid: String,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user who gets delegated tokens with grant_type=password.
    Create(UserCreateArgs),
    /// End a user's sign-in lockout now (after too many wrong passwords).
    Unlock(UserUnlockArgs),
    /// List the tenant's users: UPN, object id, state, groups.
    List(OfflineOnlyArgs),
    /// Disable a user: sign-ins are refused at once, console sessions end, tokens are
    /// refused within 30 s on every server.
    Disable(UserRefArgs),
    /// Enable a disabled user again.
    Enable(UserRefArgs),
    /// Delete a user: as disable, for good (the UPN can be created again, as another
    /// user).
    Delete(UserRefArgs),
    /// Give a user a new password, read from standard input; their console sessions
    /// end.
    SetPassword(UserSetPasswordArgs),
    /// Replace a user's groups (which decide their roles and device groups); their
    /// console sessions end and their tokens carry the new groups within 30 s.
    SetGroups(UserSetGroupsArgs),
}

#[derive(Debug, Args)]
pub struct UserRefArgs {
    /// User principal name, e.g. ana@example.com (any case).
    #[arg(value_name = "UPN")]
    pub upn: String,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Args)]
pub struct UserSetPasswordArgs {
    /// User principal name, e.g. ana@example.com (any case).
    #[arg(value_name = "UPN")]
    pub upn: String,
    /// Read the password (at least 12 characters) from the first line of standard input.
    /// Required: a password given as an argument would show in the process list.
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Args)]
pub struct UserSetGroupsArgs {
    /// User principal name, e.g. ana@example.com (any case).
    #[arg(value_name = "UPN")]
    pub upn: String,
    /// The user's groups from now on (repeat the flag or separate with commas).
    #[arg(long = "group", value_name = "GROUP", required = true, num_args = 1.., value_delimiter = ',')]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Args)]
pub struct UserUnlockArgs {
    /// User principal name, e.g. ana@example.com.
    #[arg(long)]
    pub upn: String,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Args)]
pub struct UserCreateArgs {
    /// User principal name, e.g. ana@example.com (stored in lower case); it appears as
    /// `requestor` on the actions the user creates.
    #[arg(long)]
    pub upn: String,
    /// Read the password (at least 12 characters) from the first line of standard input.
    /// Required: a password given as an argument would show in the process list.
    #[arg(long, required = true)]
    pub password_stdin: bool,
    /// Group of the user, matched against `user_groups` of [[rbac.roles]] and
    /// [[device_groups]] (repeat the flag or separate with commas).
    #[arg(long = "group", value_name = "GROUP", required = true, num_args = 1.., value_delimiter = ',')]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

/// Where the API is and who is calling. Prefer the environment for the secret: flags
/// are visible to other users in the process list.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectArgs {
    /// Server base URL: https://, or http:// on loopback [env: APPFENCE_SERVER]
    /// [default: http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Tenant id [env: APPFENCE_TENANT]
    #[arg(long)]
    pub tenant: Option<String>,
    /// Application (client) id [env: APPFENCE_CLIENT_ID]
    #[arg(long)]
    pub client_id: Option<String>,
    /// Client secret [env: APPFENCE_CLIENT_SECRET]
    #[arg(long)]
    pub client_secret: Option<String>,
    /// Token endpoint [env: APPFENCE_TOKEN_URL] [default: SERVER/TENANT/oauth2/v2.0/token]
    #[arg(long, value_name = "URL")]
    pub token_url: Option<String>,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

#[derive(Debug, Default, Args)]
pub struct LoginArgs {
    /// Server base URL: https://, or http:// on loopback [env: APPFENCE_SERVER]
    /// [default: http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Tenant id or name (tenantId in demo.json) [env: APPFENCE_TENANT]
    #[arg(long)]
    pub tenant: Option<String>,
    /// The public client to sign in with [default: the built-in client of the CLI,
    /// 3c5f2a10-8a4e-4e0b-9d2c-61f0c1a9e7b4]
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Sign in from another device: print a code to enter at the console's
    /// /console/device page (for a host without a browser, e.g. over SSH).
    #[arg(long)]
    pub device_code: bool,
    /// Do not open a browser; only print the URL to open.
    #[arg(long, conflicts_with = "device_code")]
    pub no_browser: bool,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

#[derive(Debug, Default, Args)]
pub struct LogoutArgs {
    /// Server base URL [env: APPFENCE_SERVER] [default: http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Tenant id or name [env: APPFENCE_TENANT] [default: every sign-in to the server]
    #[arg(long)]
    pub tenant: Option<String>,
    /// Forget every sign-in: remove the token cache file.
    #[arg(long, conflicts_with_all = ["server", "tenant"])]
    pub all: bool,
}

/// How a client verifies the server.
#[derive(Debug, Default, Clone, Args)]
pub struct TlsClientArgs {
    /// Trust only the CA certificates in this PEM file (e.g. from `appfence tls init`)
    /// [env: APPFENCE_CA_FILE] [default: the system's trusted CAs]
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Also require the server's public key to have this SHA-256 (hex, as `appfence tls
    /// init` prints it) [env: APPFENCE_SERVER_KEY_SHA256]
    #[arg(long, value_name = "HEX")]
    pub server_key_sha256: Option<String>,
    /// Allow plain http:// to a server that is not on loopback [env: APPFENCE_INSECURE_HTTP]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_http: Option<bool>,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Machine id, aadDeviceId or computer DNS name.
    pub machine: String,
    /// Why: recorded as the action's requestorComment.
    #[arg(long)]
    pub comment: String,
    /// Wait until the action is final; exit 0 only if it Succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long, e.g. 90s, 10m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10m", requires = "wait")]
    pub timeout: Duration,
    /// How often to poll the action while waiting.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "500ms", hide = true)]
    pub poll_interval: Duration,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// List machine actions, newest first.
    List(ListArgs),
    /// Show one machine action.
    Get(GetArgs),
    /// Cancel an open machine action.
    Cancel(CancelArgs),
}

#[derive(Debug, Subcommand)]
pub enum MachinesCommand {
    /// List machines.
    List(ListArgs),
    /// Show one machine (by id, aadDeviceId or computer DNS name) and its enforcement
    /// state.
    Get(GetArgs),
    /// List what the machine's agent denied (or would have, in monitor mode), newest first.
    Events(EventsArgs),
    /// Find machines by the internal IP they had at a time, or by tag.
    Find(FindArgs),
    /// Add or remove a machine tag (moves the machine into the device group it matches).
    Tag(TagArgs),
    /// Update a machine (PATCH /api/machines/{id}, MDE's Update machine): its device
    /// value and/or its whole set of tags. Needs Machine.ReadWrite.All.
    Update(MachineUpdateArgs),
    /// Offboard a machine (POST /api/machines/{id}/offboard): its agent lifts the
    /// enforcement, forgets its credential and stops; the machine then shows as
    /// Offboarded and takes no more actions. Needs Machine.Offboard.
    Offboard(ActionArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("by").required(true).args(["ip", "tag"])))]
pub struct FindArgs {
    /// The internal IPv4 or IPv6 address.
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// With --ip: when the machine had it, a UTC time such as 2026-12-07T09:30:00Z
    /// (within the last 30 days; 15 minutes either side count) [default: now]
    #[arg(long, value_name = "TIME", requires = "ip")]
    pub at: Option<String>,
    /// The tag (case-insensitive).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// With --tag: every tag that starts with TAG.
    #[arg(long, requires = "tag")]
    pub prefix: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).args(["add", "remove"])))]
pub struct TagArgs {
    /// Machine id, aadDeviceId or computer DNS name.
    pub machine: String,
    /// The tag to add.
    #[arg(long, value_name = "TAG")]
    pub add: Option<String>,
    /// The tag to remove.
    #[arg(long, value_name = "TAG")]
    pub remove: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["device_value", "tags"])))]
pub struct MachineUpdateArgs {
    /// Machine id, aadDeviceId or computer DNS name.
    pub machine: String,
    /// Normal, Low or High.
    #[arg(long, value_name = "VALUE")]
    pub device_value: Option<String>,
    /// The machine's new tags, comma-separated: they replace all its tags (as MDE's
    /// Update machine does); "" removes every tag.
    #[arg(long, value_name = "A,B")]
    pub tags: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Machine id, aadDeviceId or computer DNS name.
    pub machine: String,
    /// Return at most this many ($top).
    #[arg(long, value_name = "N")]
    pub top: Option<u32>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List alerts, newest first (GET /api/alerts); every page unless --top.
    List(AlertListArgs),
    /// Show one alert with its comments and evidence (GET /api/alerts/{id}).
    Show(AlertShowArgs),
    /// Change alerts' status, assignee, classification or determination, or comment on
    /// them (PATCH /api/alerts/{id}; POST /api/alerts/batchUpdate for several).
    Update(AlertUpdateArgs),
}

/// An alert status, as MDE spells it (given in any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AlertStatusArg {
    #[value(name = "New")]
    New,
    #[value(name = "InProgress")]
    InProgress,
    #[value(name = "Resolved")]
    Resolved,
    #[value(name = "Unknown")]
    Unknown,
}

impl AlertStatusArg {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatusArg::New => "New",
            AlertStatusArg::InProgress => "InProgress",
            AlertStatusArg::Resolved => "Resolved",
            AlertStatusArg::Unknown => "Unknown",
        }
    }
}

/// A status an analyst may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AlertNewStatus {
    #[value(name = "New")]
    New,
    #[value(name = "InProgress")]
    InProgress,
    #[value(name = "Resolved")]
    Resolved,
}

impl AlertNewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertNewStatus::New => "New",
            AlertNewStatus::InProgress => "InProgress",
            AlertNewStatus::Resolved => "Resolved",
        }
    }
}

/// An alert severity, as MDE spells it (given in any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AlertSeverityArg {
    #[value(name = "UnSpecified")]
    UnSpecified,
    #[value(name = "Informational")]
    Informational,
    #[value(name = "Low")]
    Low,
    #[value(name = "Medium")]
    Medium,
    #[value(name = "High")]
    High,
}

impl AlertSeverityArg {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverityArg::UnSpecified => "UnSpecified",
            AlertSeverityArg::Informational => "Informational",
            AlertSeverityArg::Low => "Low",
            AlertSeverityArg::Medium => "Medium",
            AlertSeverityArg::High => "High",
        }
    }
}

#[derive(Debug, Args)]
pub struct AlertListArgs {
    /// Only alerts created after this: an RFC 3339 time (2026-12-07T09:30:00Z) or how
    /// long ago (1h, 30m, 7d).
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Only alerts with one of these statuses (repeat, or separate with commas or
    /// spaces).
    #[arg(long, value_enum, ignore_case = true, num_args = 1.., value_delimiter = ',')]
    pub status: Vec<AlertStatusArg>,
    /// Only alerts with one of these severities.
    #[arg(long, value_enum, ignore_case = true, num_args = 1.., value_delimiter = ',')]
    pub severity: Vec<AlertSeverityArg>,
    /// Only the alerts of this machine: its id, aadDeviceId or computer DNS name.
    #[arg(long, value_name = "MACHINE")]
    pub machine: Option<String>,
    /// A further OData $filter condition, e.g. "category eq 'Execution'" (the fields
    /// of GET /api/alerts).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Return at most this many, one page ($top, at most 10000) [default: every alert,
    /// following @odata.nextLink]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub top: Option<u32>,
    /// Include each alert's evidence ($expand=evidence); the table always shows the
    /// SHA-256 of the first file.
    #[arg(long)]
    pub evidence: bool,
    /// Print JSON (as --output json).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct AlertShowArgs {
    /// Alert id.
    pub id: String,
    /// Print JSON (as --output json).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true)
    .args(["status", "assign_to", "classification", "determination", "comment"])))]
pub struct AlertUpdateArgs {
    /// Alert ids: one is updated with PATCH, several together (all or none).
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
    /// New, InProgress or Resolved.
    #[arg(long, value_enum, ignore_case = true)]
    pub status: Option<AlertNewStatus>,
    /// Who owns the alert, e.g. secop@contoso.com ("" unassigns).
    #[arg(long, value_name = "USER")]
    pub assign_to: Option<String>,
    /// TruePositive, InformationalExpectedActivity or FalsePositive.
    #[arg(long)]
    pub classification: Option<String>,
    /// e.g. Malware, UnwantedSoftware, SecurityTesting, LineOfBusinessApplication,
    /// Clean, Other.
    #[arg(long)]
    pub determination: Option<String>,
    /// A comment to add to the alert.
    #[arg(long)]
    pub comment: Option<String>,
    /// Print JSON (as --output json).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
pub enum IndicatorsCommand {
    /// Block, audit or allow a file by SHA-256 (POST /api/indicators; submitting the
    /// same hash again updates it).
    Add(IndicatorAddArgs),
    /// Import up to 500 indicators from a CSV file (POST /api/indicators/import).
    #[command(long_about = IMPORT_HELP)]
    Import(IndicatorImportArgs),
    /// List the indicators, newest first.
    List(ListArgs),
    /// Delete an indicator by id (DELETE /api/indicators/{id}).
    Delete(IndicatorDeleteArgs),
}

#[derive(Debug, Args)]
pub struct IndicatorAddArgs {
    /// SHA-256 of the file, 64 hexadecimal characters (e.g. from `sha256sum FILE`).
    #[arg(long, value_name = "HASH")]
    pub sha256: String,
    /// Block, AlertAndBlock or BlockAndRemediate: every device in scope denies running
    /// the file, restricted or not (BlockAndRemediate does not quarantine it); Audit or
    /// Alert: runs are allowed and reported (as alerts); Allowed: restricted devices let
    /// it run. Block beats Allowed for the same file.
    #[arg(long, value_name = "ACTION", default_value = "Allowed")]
    pub action: String,
    /// The indicator's title [default: "<action> file <first 12 hex digits>"]
    #[arg(long)]
    pub title: Option<String>,
    /// The indicator's description [default: says what the action does]
    #[arg(long)]
    pub description: Option<String>,
    /// Apply it only to this device group (repeatable) [default: every device]
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Mark what it matches as alerts (always on for Audit, as MDE requires).
    #[arg(long)]
    pub generate_alert: bool,
    /// The application the file belongs to.
    #[arg(long)]
    pub application: Option<String>,
    /// When the indicator expires, RFC 3339 (e.g. 2030-01-01T00:00:00Z); it is then
    /// removed from the allowlist.
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

const IMPORT_HELP: &str =
    "Import up to 500 indicators from a CSV file (POST /api/indicators/import).

The first line names the columns, as in MDE's indicator import file (names are matched
case-insensitively; columns in any order):
  indicatorType       FileSha256 (required)
  indicatorValue      the SHA-256 (required)
  action              Block, AlertAndBlock, BlockAndRemediate, Audit, Alert or Allowed (required)
  title               (required)
  description         (required)
  expirationTime      e.g. 2030-01-01T00:00:00Z
  severity            Informational, Low, Medium or High
  recommendedActions
  rbacGroupNames      device groups, comma-separated (also: RbacGroups)
  generateAlert       True or False
  category, mitreTechniques: accepted and ignored.
Fields holding commas or quotes are quoted (\"a, b\"; a quote inside is doubled).
Each row is stored or refused on its own; the output lists every row's result.";

#[derive(Debug, Args)]
pub struct IndicatorImportArgs {
    /// The CSV file.
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct IndicatorDeleteArgs {
    /// Indicator id (a number, as `indicators list` shows).
    pub id: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// OData $filter, e.g. "status eq 'Pending'" or "startswith(computerDnsName,'web')".
    #[arg(long)]
    pub filter: Option<String>,
    /// Return at most this many ($top).
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub top: Option<u32>,
    /// Follow @odata.nextLink and return every match.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub id: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Action id.
    pub id: String,
    /// Why: recorded as the action's cancellationComment.
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Settings of `agent`. Each is also read from an `APPFENCE_*` variable; precedence:
/// flag, then environment, then default.
#[derive(Debug, Default, Args)]
pub struct AgentArgs {
    /// Server base URL: https://, or http:// on loopback [env: APPFENCE_SERVER]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    #[command(flatten)]
    pub tls: TlsClientArgs,
    /// The tenant's enrolment secret, needed until this host is enrolled
    /// (`appfence enroll-secret create`) [env: APPFENCE_ENROLL_SECRET]
    // A generated secret is base64url and may start with '-'.
    #[arg(long, value_name = "SECRET", allow_hyphen_values = true)]
    pub enroll_secret: Option<String>,
    /// Where the credential and the enforcement state live
    /// [env: APPFENCE_STATE_DIR] [default: /var/lib/appfence-agent]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Enforce only on the filesystems holding these paths (repeat the flag)
    /// [env: APPFENCE_ONLY_MOUNTS, comma-separated] [default: every local filesystem,
    /// and new ones as they are mounted]
    #[arg(long = "only-mount", value_name = "PATH")]
    pub only_mounts: Vec<PathBuf>,
    /// Machine tag, matched by device groups (repeat the flag)
    /// [env: APPFENCE_TAGS, comma-separated]
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Every execution is decided within this time, e.g. 2s, 500ms
    /// [env: APPFENCE_DECISION_DEADLINE] [default: 2s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub decision_deadline: Option<Duration>,
    /// The answer when a decision misses the deadline
    /// [env: APPFENCE_ON_DEADLINE] [default: allow]
    #[arg(long, value_enum)]
    pub on_deadline: Option<OnDeadline>,
    /// Log filter: a level (info, debug) or tracing directives
    /// [env: APPFENCE_LOG_LEVEL] [default: info]
    #[arg(long, value_name = "FILTER", value_parser = parse_log_level)]
    pub log_level: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnDeadline {
    Allow,
    Deny,
}

#[derive(Debug, Subcommand)]
pub enum EnrollSecretCommand {
    /// Create an enrolment secret and print it (shown once).
    Create(EnrollSecretCreateArgs),
    /// List the tenant's enrolment secrets: id, created, expires, uses, revoked.
    List(OfflineOnlyArgs),
    /// Revoke an enrolment secret: it enrols no device any more (enrolled devices keep
    /// their own credentials).
    Revoke(EnrollSecretRevokeArgs),
}

#[derive(Debug, Args)]
pub struct EnrollSecretCreateArgs {
    /// How long it enrols devices, e.g. 7d, or never
    #[arg(long, value_name = "PERIOD|never", value_parser = parse_lifetime, default_value = "30d")]
    pub expires: Lifetime,
    /// How many devices it may enrol [default: any number]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uses: Option<u32>,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

/// How long something stays valid; `None`: for ever (`never`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime(pub Option<Duration>);

fn parse_lifetime(s: &str) -> Result<Lifetime, String> {
    parse_optional_period(s).map(Lifetime)
}

#[derive(Debug, Args)]
pub struct EnrollSecretRevokeArgs {
    /// The secret's id, as `enroll-secret list` shows it.
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_lifecycle_commands_with_their_defaults() {
        let day = Duration::from_secs(86_400);
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().command;
        let Command::App(AppCommand::Create(a)) =
            parse(&["appfence", "app", "create", "--name", "n", "--role", "r"])
        else {
            panic!("not app create")
        };
        assert_eq!(a.expires, 180 * day);
        let Command::App(AppCommand::Secret(AppSecretCommand::Add(a))) = parse(&[
            "appfence",
            "app",
            "secret",
            "add",
            "SOAR",
            "--expires",
            "90d",
        ]) else {
            panic!("not app secret add")
        };
        assert_eq!((a.app.as_str(), a.expires), ("SOAR", 90 * day));
        let Command::App(AppCommand::Secret(AppSecretCommand::Remove(a))) =
            parse(&["appfence", "app", "secret", "remove", "SOAR", "id-1"])
        else {
            panic!("not app secret remove")
        };
        assert_eq!(a.secret_id, "id-1");
        let Command::EnrollSecret(EnrollSecretCommand::Create(a)) =
            parse(&["appfence", "enroll-secret", "create"])
        else {
            panic!("not enroll-secret create")
        };
        assert_eq!((a.expires, a.max_uses), (Lifetime(Some(30 * day)), None));
        let Command::EnrollSecret(EnrollSecretCommand::Create(a)) = parse(&[
            "appfence",
            "enroll-secret",
            "create",
            "--expires",
            "never",
            "--max-uses",
            "3",
        ]) else {
            panic!("not enroll-secret create")
        };
        assert_eq!((a.expires, a.max_uses), (Lifetime(None), Some(3)));
        let Command::User(UserCommand::SetGroups(a)) =
            parse(&["appfence", "user", "set-groups", "ana@x", "--group", "a,b"])
        else {
            panic!("not user set-groups")
        };
        assert_eq!(a.groups, ["a", "b"]);
        for bad in [
            &["appfence", "enroll-secret", "create", "--max-uses", "0"][..],
            &["appfence", "user", "set-password", "ana@x"],
            &[
                "appfence",
                "app",
                "secret",
                "add",
                "SOAR",
                "--expires",
                "0s",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_a_restrict_with_wait() {
        let cli = Cli::try_parse_from([
            "appfence",
            "restrict",
            "web-01",
            "--comment",
            "alert 1",
            "--wait",
            "--timeout",
            "90s",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        let Command::Restrict(a) = cli.command else {
            panic!("not restrict")
        };
        assert_eq!(a.machine, "web-01");
        assert!(a.wait);
        assert_eq!(a.timeout, Duration::from_secs(90));
        assert_eq!(a.poll_interval, Duration::from_millis(500));
    }

    #[test]
    fn parses_an_offboard() {
        let cli = Cli::try_parse_from([
            "appfence",
            "machines",
            "offboard",
            "web-01",
            "--comment",
            "decommissioned",
            "--wait",
        ])
        .unwrap();
        let Command::Machines(MachinesCommand::Offboard(a)) = cli.command else {
            panic!("not machines offboard")
        };
        assert_eq!(
            (a.machine.as_str(), a.comment.as_str()),
            ("web-01", "decommissioned")
        );
        assert!(a.wait);
        // The comment is required, as MDE requires it.
        assert!(Cli::try_parse_from(["appfence", "machines", "offboard", "web-01"]).is_err());
    }

    #[test]
    fn usage_errors_are_reported_by_clap() {
        // --timeout without --wait, a missing --comment, a bad duration, --top with --all.
        for argv in [
            &[
                "appfence",
                "restrict",
                "m",
                "--comment",
                "c",
                "--timeout",
                "1m",
            ][..],
            &["appfence", "restrict", "m"],
            &[
                "appfence",
                "restrict",
                "m",
                "--comment",
                "c",
                "--wait",
                "--timeout",
                "10",
            ],
            &["appfence", "actions", "list", "--top", "5", "--all"],
            &["appfence", "serve", "--listen", "nowhere"],
            &["appfence", "app", "create", "--name", "x"],
        ] {
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn roles_repeat_or_split_on_commas() {
        let cli = Cli::try_parse_from([
            "appfence",
            "app",
            "create",
            "--name",
            "soar",
            "--role",
            "Machine.RestrictExecution,Machine.Read.All",
            "--role",
            "Machine.ReadWrite.All",
        ])
        .unwrap();
        let Command::App(AppCommand::Create(a)) = cli.command else {
            panic!()
        };
        assert_eq!(
            a.roles,
            [
                "Machine.RestrictExecution",
                "Machine.Read.All",
                "Machine.ReadWrite.All"
            ]
        );
    }

    #[test]
    fn an_enrolment_secret_may_start_with_a_hyphen() {
        // base64url: a generated secret starts with '-' one time in 64.
        let cli = Cli::try_parse_from(["appfence", "agent", "--enroll-secret", "-B3xQ"]).unwrap();
        match cli.command {
            Command::Agent(a) => assert_eq!(a.enroll_secret.as_deref(), Some("-B3xQ")),
            _ => unreachable!(),
        }
    }

    #[test]
    fn demo_is_a_flag_with_an_optional_value() {
        let parse = |argv: &[&str]| match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(s) => s.demo,
            _ => unreachable!(),
        };
        assert_eq!(parse(&["appfence", "serve"]), None);
        assert_eq!(parse(&["appfence", "serve", "--demo"]), Some(true));
        assert_eq!(parse(&["appfence", "serve", "--demo=false"]), Some(false));
    }

    #[test]
    fn indicators_and_events_parse() {
        let cli = Cli::try_parse_from([
            "appfence",
            "indicators",
            "add",
            "--sha256",
            "ab",
            "--title",
            "t",
        ])
        .unwrap();
        let Command::Indicators(IndicatorsCommand::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!((a.sha256.as_str(), a.title.as_deref()), ("ab", Some("t")));
        let cli =
            Cli::try_parse_from(["appfence", "machines", "events", "web-1", "--top", "3"]).unwrap();
        let Command::Machines(MachinesCommand::Events(e)) = cli.command else {
            panic!()
        };
        assert_eq!((e.machine.as_str(), e.top), ("web-1", Some(3)));
        let cli = Cli::try_parse_from(["appfence", "serve", "--agent-mode", "Monitor"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.agent_mode, Some(EnforcementMode::Monitor));
        assert!(Cli::try_parse_from(["appfence", "serve", "--agent-mode", "audit"]).is_err());
        assert!(Cli::try_parse_from(["appfence", "indicators", "add"]).is_err());
    }
}
