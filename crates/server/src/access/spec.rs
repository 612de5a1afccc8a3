//! The access settings as declared (config file `[[auth.issuers]]`, `[[rbac.roles]]`,
//! `[[device_groups]]`), before tenants are resolved. Each entry remembers the config
//! file line it came from, so that a refusal can name it.

use appfence_core::rbac::DeviceRule;

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
}

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
}
