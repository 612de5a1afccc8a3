//! Server settings. The CLI fills this from flags, `APPFENCE_*` variables and the TOML
//! config file; tests fill it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The key-encryption key file in the data directory, unless configured elsewhere.
pub const DEFAULT_KEY_FILE: &str = "master.key";
/// Final actions and denial events are kept 180 days, as MDE keeps its data.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(180 * 24 * 60 * 60);
/// Signing keys are replaced every 90 days.
pub const DEFAULT_SIGNING_KEY_ROTATION: Duration = Duration::from_secs(90 * 24 * 60 * 60);

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Base URL used in `@odata.context`, token issuers and links; derived from the
    /// listening address when not set.
    pub public_url: Option<String>,
    /// `Pending` actions older than this become `TimeOut` (MDE retries offline devices
    /// for three days).
    pub action_pending_timeout: Duration,
    /// `InProgress` actions without an update for this long become `TimeOut`.
    pub action_inprogress_timeout: Duration,
    /// Final actions (`Succeeded`, `Failed`, `TimeOut`, `Cancelled`) last updated, and
    /// denial events received, longer ago than this are deleted by the sweeper (`None`:
    /// kept for ever). MDE keeps 180 days. The audit trail of a deleted action stays.
    pub retention: Option<Duration>,
    /// How often the sweeper looks for stale actions.
    pub sweep_interval: Duration,
    /// Lifetime of access tokens issued by the built-in authorization server.
    pub token_lifetime: Duration,
    /// The longest a device's command long-poll is held open.
    pub long_poll_max: Duration,
    /// Agents older than this get `ClientVersionNotSupported` on restrict/unrestrict.
    pub min_agent_version: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Calls per caller and API (MDE: 100 a minute, 1,500 an hour).
    pub rate_limits: appfence_core::ratelimit::RateLimitPolicy,
    /// External issuers, roles and device groups (reloadable).
    pub access: crate::access::AccessSpec,
    /// How restricted devices treat programs outside the trusted set: `Enforce` (deny
    /// them) or `Monitor` (only report them); sent to agents as `DesiredState.mode`.
    pub agent_mode: appfence_proto::agent::EnforcementMode,
    /// The key-encryption key file; `None`: `<data_dir>/master.key`.
    pub key_file: Option<PathBuf>,
    /// Let the group of the data directory and key file read them (never others).
    pub allow_group_read: bool,
    /// How often each replica re-reads the signing keys: the bound within which a
    /// rotation or a retirement takes effect everywhere.
    pub key_refresh_interval: Duration,
    /// The signing key is replaced after signing for this long (`None`: never).
    pub signing_key_rotation: Option<Duration>,
    /// Failed sign-ins before a lockout, per address limits (see
    /// `appfence_core::sign_in_throttle`).
    pub sign_in_throttle: appfence_core::sign_in_throttle::ThrottlePolicy,
    /// Reverse proxies whose `X-Forwarded-For` names the client (for per-address
    /// limits); nobody else is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Where to serve Prometheus metrics (`None`: nowhere).
    pub metrics_listen: Option<SocketAddr>,
    /// When the data directory's free space is worth a warning.
    pub disk_free_warning: crate::disk_space::FreeSpaceWarning,
    /// Header-read timeout and the cap on open connections.
    pub connection_limits: crate::connections::ConnectionLimits,
    /// Serve HTTPS with this certificate and key (reloaded on SIGHUP).
    pub tls: Option<appfence_tls::server::TlsFiles>,
    /// Allow plain HTTP on an address other than loopback (a TLS-terminating proxy in
    /// front); refused otherwise.
    pub insecure_http: bool,
    /// How denials become alerts: the grouping window, and whether monitor mode's
    /// would-be denials raise alerts.
    pub alerts: appfence_core::alerts::AlertSettings,
    /// A restricted device that has not checked in for this long raises an alert
    /// (`None`: never).
    pub silence_alert_after: Option<Duration>,
}

impl ServerConfig {
    /// Plain HTTP off loopback sends credentials and commands in clear text: refused
    /// unless `insecure_http` says a TLS-terminating proxy is in front.
    pub fn check_transport(&self) -> Result<(), String> {
        if self.tls.is_some() || self.listen.ip().is_loopback() || self.insecure_http {
            return Ok(());
        }
        Err(format!(
            "refusing to serve plain HTTP on {}, which is not a loopback address: credentials \
             and commands would cross the network in clear text. Give --tls-cert and \
             --tls-key (appfence tls init makes a lab certificate), or --insecure-http if a \
             TLS-terminating proxy is in front",
            self.listen
        ))
    }

    /// The key-encryption key file in use.
    pub fn key_file(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_KEY_FILE))
    }

    /// The times of key rotations under this configuration.
    pub fn rotation_timing(&self) -> appfence_core::signing_keys::RotationTiming {
        appfence_core::signing_keys::RotationTiming {
            refresh_interval: self.key_refresh_interval,
            token_lifetime: self.token_lifetime,
        }
    }

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("{}://{}", self.scheme(), self.listen))
            .trim_end_matches('/')
            .to_string()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("./appfence-data"),
            public_url: None,
            action_pending_timeout: Duration::from_secs(3 * 24 * 3600),
            action_inprogress_timeout: Duration::from_secs(10 * 60),
            retention: Some(DEFAULT_RETENTION),
            sweep_interval: Duration::from_secs(5),
            token_lifetime: Duration::from_secs(3599),
            long_poll_max: Duration::from_secs(60),
            min_agent_version: "0.1.0".into(),
            max_body_bytes: 64 * 1024,
            rate_limits: Default::default(),
            access: Default::default(),
            agent_mode: Default::default(),
            key_file: None,
            allow_group_read: false,
            key_refresh_interval: Duration::from_secs(10),
            signing_key_rotation: Some(DEFAULT_SIGNING_KEY_ROTATION),
            sign_in_throttle: Default::default(),
            trusted_proxies: Vec::new(),
            metrics_listen: None,
            disk_free_warning: crate::disk_space::FreeSpaceWarning::Default,
            tls: None,
            insecure_http: false,
            alerts: Default::default(),
            silence_alert_after: Some(Duration::from_secs(10 * 60)),
            connection_limits: Default::default(),
        }
    }
}
