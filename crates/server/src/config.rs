//! Server settings. The CLI fills this from flags, `APPFENCE_*` variables and the TOML
//! config file; tests fill it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
}

impl ServerConfig {
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
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
            sweep_interval: Duration::from_secs(5),
            token_lifetime: Duration::from_secs(3599),
            long_poll_max: Duration::from_secs(60),
            min_agent_version: "0.1.0".into(),
            max_body_bytes: 64 * 1024,
            rate_limits: Default::default(),
            access: Default::default(),
            agent_mode: Default::default(),
        }
    }
}
