//! The access settings as declared (config file `[[auth.issuers]]`, `[[rbac.roles]]`,
//! `[[device_groups]]`), before tenants are resolved. Each entry remembers the config
//! file line it came from, so that a refusal can name it.

use appfence_core::rbac::DeviceRule;
use appfence_proto::Secret;

/// Everything reloadable on SIGHUP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessSpec {
    pub issuers: Vec<IssuerSpec>,
    pub roles: Vec<RoleSpec>,
    pub device_groups: Vec<DeviceGroupSpec>,
}

/// An external OpenID Connect issuer whose tokens the API accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerSpec {
    pub line: Option<usize>,
    /// Exactly the `iss` claim of its tokens.
    pub issuer: String,
    /// Accepted `aud` values; at least one.
    pub audiences: Vec<String>,
    /// Otherwise read from `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    /// The appfence tenant these tokens act on; defaults to the only tenant.
    pub tenant: Option<String>,
    /// Sign-in to the web console through this issuer (authorization code flow).
    pub console: Option<ConsoleClientSpec>,
}

/// The console's client at an external issuer, as declared (`console_client_id`...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleClientSpec {
    pub client_id: String,
    /// A confidential client's secret (the file's content when read from
    /// `console_client_secret_file`); `None` for a public client (PKCE only).
    pub client_secret: Option<Secret>,
    /// The sign-in button's label; defaults to the issuer's host.
    pub display_name: Option<String>,
    /// Space-separated; defaults to [`DEFAULT_CONSOLE_SCOPES`]. Must hold `openid`.
    pub scopes: Option<String>,
}

/// The scopes the console asks for unless configured.
pub const DEFAULT_CONSOLE_SCOPES: &str = "openid profile email";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    pub line: Option<usize>,
    pub name: String,
    pub permissions: Vec<String>,
    pub user_groups: Vec<String>,
    pub tenant: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceGroupSpec {
    pub line: Option<usize>,
    pub name: String,
    pub rank: u32,
    /// `rbacGroupId`; derived from the name when not given.
    pub id: Option<i64>,
    pub rule: DeviceRule,
    pub user_groups: Vec<String>,
    pub tenant: Option<String>,
}

/// An issuer with its tenant resolved and its URLs checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub tenant_id: String,
    pub console: Option<ConsoleClient>,
}

/// The console's client at an issuer, checked, with its defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleClient {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub display_name: String,
    pub scopes: String,
}
