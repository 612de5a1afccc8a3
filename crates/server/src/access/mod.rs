//! Who may do what, as configured: external token issuers, portal roles and device
//! groups. Declared in the config file ([`AccessSpec`]), resolved against the tenants
//! ([`resolve`]) and swapped in whole on SIGHUP ([`AccessHolder`]); a spec that does not
//! validate is refused and the policy in force stays.

pub mod spec;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use appfence_core::rbac::{default_group_id, DeviceGroup, Permission, Role, TenantRbac};
use appfence_core::records::{GroupAssignment, Tenant};
use appfence_core::{Error, MachineRecord};
use appfence_store::Store;

pub use spec::{
    AccessSpec, ConsoleClient, ConsoleClientSpec, DeviceGroupSpec, IssuerConfig, IssuerSpec,
    RoleSpec, DEFAULT_CONSOLE_SCOPES,
};

/// The resolved policy: RBAC per tenant and the external issuers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    rbac: HashMap<String, TenantRbac>,
    pub issuers: Vec<IssuerConfig>,
}

static NO_RBAC: std::sync::OnceLock<TenantRbac> = std::sync::OnceLock::new();

impl AccessPolicy {
    /// A tenant's roles and device groups (none declared: no roles, no groups).
    pub fn rbac(&self, tenant_id: &str) -> &TenantRbac {
        self.rbac
            .get(tenant_id)
            .unwrap_or_else(|| NO_RBAC.get_or_init(TenantRbac::default))
    }
}

/// Prefixes a message with the config line it is about.
fn at_line(line: Option<usize>, message: impl std::fmt::Display) -> String {
    match line {
        Some(n) => format!("line {n}: {message}"),
        None => message.to_string(),
    }
}

/// The tenant an entry names, or the only tenant when it names none.
fn tenant_of(
    declared: Option<&str>,
    tenants: &[Tenant],
    line: Option<usize>,
) -> Result<String, String> {
    match declared {
        Some(id) if tenants.iter().any(|t| t.id == id) => Ok(id.to_string()),
        Some(id) => Err(at_line(line, format!("tenant '{id}' does not exist"))),
        None => match tenants {
            [only] => Ok(only.id.clone()),
            [] => Err(at_line(line, "there is no tenant yet")),
            _ => Err(at_line(
                line,
                "several tenants exist: say which one with tenant = \"...\"",
            )),
        },
    }
}

/// `https://`, or plain `http://` to a loopback host (for tests and local IdPs).
pub fn check_url(what: &str, url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("https://") {
        return if rest.is_empty() || rest.starts_with('/') {
            Err(format!("{what} '{url}' has no host"))
        } else {
            Ok(())
        };
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(format!("{what} '{url}' must be an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "{what} '{url}' must use https (plain http is accepted only for loopback)"
        ))
    }
}

/// The console client of `issuer`, checked, with the defaults applied.
fn console_client(issuer: &str, c: &ConsoleClientSpec) -> Result<ConsoleClient, String> {
    let client_id = c.client_id.trim();
    if client_id.is_empty() {
        return Err(format!(
            "issuer '{issuer}': console_client_id must not be empty"
        ));
    }
    if c.client_secret
        .as_ref()
        .is_some_and(|s| s.expose().trim().is_empty())
    {
        return Err(format!(
            "issuer '{issuer}': console_client_secret must not be empty"
        ));
    }
    let display_name = match &c.display_name {
        Some(name) if name.trim().is_empty() => {
            return Err(format!("issuer '{issuer}': display_name must not be empty"))
        }
        Some(name) => name.trim().to_string(),
        None => reqwest::Url::parse(issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| issuer.to_string()),
    };
    let scopes = c
        .scopes
        .as_deref()
        .unwrap_or(DEFAULT_CONSOLE_SCOPES)
        .split_whitespace()
        .collect::<Vec<_>>();
    if !scopes.contains(&"openid") {
        return Err(format!(
            "issuer '{issuer}': console_scopes must include openid (OpenID Connect sign-in)"
        ));
    }
    Ok(ConsoleClient {
        client_id: client_id.to_string(),
        client_secret: c.client_secret.clone(),
        display_name,
        scopes: scopes.join(" "),
    })
}

/// Checks a spec and resolves its tenants. The error names the config line.
pub fn resolve(spec: &AccessSpec, tenants: &[Tenant]) -> Result<AccessPolicy, String> {
    let mut issuers = Vec::new();
    for i in &spec.issuers {
        if i.issuer.trim().is_empty() {
            return Err(at_line(i.line, "issuer must not be empty"));
        }
        check_url("issuer", &i.issuer).map_err(|e| at_line(i.line, e))?;
        if let Some(uri) = &i.jwks_uri {
            check_url("jwks_uri", uri).map_err(|e| at_line(i.line, e))?;
        }
        if i.audiences.iter().all(|a| a.trim().is_empty()) {
            return Err(at_line(
                i.line,
                format!("issuer '{}' needs at least one audience", i.issuer),
            ));
        }
        if issuers.iter().any(|c: &IssuerConfig| c.issuer == i.issuer) {
            return Err(at_line(
                i.line,
                format!("issuer '{}' is declared twice", i.issuer),
            ));
        }
        let console = match &i.console {
            Some(c) => Some(console_client(&i.issuer, c).map_err(|e| at_line(i.line, e))?),
            None => None,
        };
        issuers.push(IssuerConfig {
            issuer: i.issuer.clone(),
            audiences: i.audiences.clone(),
            jwks_uri: i.jwks_uri.clone(),
            tenant_id: tenant_of(i.tenant.as_deref(), tenants, i.line)?,
            console,
        });
    }

    let mut roles: HashMap<String, Vec<(Option<usize>, Role)>> = HashMap::new();
    for r in &spec.roles {
        let tenant = tenant_of(r.tenant.as_deref(), tenants, r.line)?;
        let permissions = r
            .permissions
            .iter()
            .map(|p| Permission::parse(p))
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(|e| at_line(r.line, format!("role '{}': {e}", r.name)))?;
        if permissions.is_empty() {
            return Err(at_line(
                r.line,
                format!("role '{}' grants no permissions", r.name),
            ));
        }
        roles.entry(tenant).or_default().push((
            r.line,
            Role {
                name: r.name.clone(),
                permissions,
                user_groups: r.user_groups.clone(),
            },
        ));
    }
    let mut groups: HashMap<String, Vec<(Option<usize>, DeviceGroup)>> = HashMap::new();
    for g in &spec.device_groups {
        let tenant = tenant_of(g.tenant.as_deref(), tenants, g.line)?;
        groups.entry(tenant).or_default().push((
            g.line,
            DeviceGroup {
                id: g.id.unwrap_or_else(|| default_group_id(&g.name)),
                name: g.name.clone(),
                rank: g.rank,
                rule: g.rule.clone(),
                user_groups: g.user_groups.clone(),
            },
        ));
    }

    let mut rbac = HashMap::new();
    let tenant_ids: BTreeSet<String> = roles.keys().chain(groups.keys()).cloned().collect();
    for tenant in tenant_ids {
        // Checked one entry at a time, so that an error names the line of the offender.
        let mut checked_roles: Vec<Role> = Vec::new();
        for (line, role) in roles.remove(&tenant).unwrap_or_default() {
            checked_roles.push(role);
            TenantRbac::new(checked_roles.clone(), vec![]).map_err(|e| at_line(line, e))?;
        }
        let mut checked_groups: Vec<DeviceGroup> = Vec::new();
        for (line, group) in groups.remove(&tenant).unwrap_or_default() {
            checked_groups.push(group);
            TenantRbac::new(vec![], checked_groups.clone()).map_err(|e| at_line(line, e))?;
        }
        rbac.insert(tenant, TenantRbac::new(checked_roles, checked_groups)?);
    }
    Ok(AccessPolicy { rbac, issuers })
}

/// The policy in force, replaced whole on reload; readers take a cheap `Arc` snapshot.
pub struct AccessHolder {
    current: RwLock<Arc<AccessPolicy>>,
}

impl AccessHolder {
    pub fn new(policy: AccessPolicy) -> Self {
        AccessHolder {
            current: RwLock::new(Arc::new(policy)),
        }
    }

    pub fn current(&self) -> Arc<AccessPolicy> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, policy: AccessPolicy) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
    }
}

/// Each machine's device group, remembered from the store: a user's call on an action
/// needs the group of the action's machine, and reading the whole machine record for it
/// would cost more than the rest of the authorization. Groups change only when
/// any replica regroups (start-up, reload, tags): that clears it here and, through the
/// changes the store publishes, on every other replica.
#[derive(Default)]
pub struct MachineGroups {
    known: RwLock<HashMap<String, (i64, Option<String>)>>,
    /// Bumped by every clear, so a lookup that read the store before a regrouping cannot
    /// store its (old) answer after the clear.
    generation: std::sync::atomic::AtomicU64,
}

impl MachineGroups {
    pub fn get(&self, machine_id: &str) -> Option<(i64, Option<String>)> {
        self.known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(machine_id)
            .cloned()
    }

    /// Take before reading the store; pass to [`MachineGroups::remember`].
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps a group read from the store at `generation`, unless a clear came since.
    pub fn remember(&self, generation: u64, machine_id: &str, group: (i64, Option<String>)) {
        let mut known = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.generation() == generation {
            known.insert(machine_id.to_string(), group);
        }
    }

    pub fn clear(&self) {
        let mut known = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        known.clear();
    }
}

/// The device-group changes that `rbac` implies for `machines`.
pub fn regroup(rbac: &TenantRbac, machines: &[MachineRecord]) -> Vec<GroupAssignment> {
    machines
        .iter()
        .filter_map(|m| {
            let (id, name) = rbac.group_of(m);
            (id != m.rbac_group_id || name != m.rbac_group_name).then(|| GroupAssignment {
                machine_id: m.id.clone(),
                rbac_group_id: id,
                rbac_group_name: name,
            })
        })
        .collect()
}

/// Puts every machine of every tenant into its device group under `policy`; returns how
/// many machines moved.
pub async fn regroup_all(store: &dyn Store, policy: &AccessPolicy) -> Result<usize, Error> {
    let mut moved = 0;
    for tenant in store.tenants().await? {
        let rbac = policy.rbac(&tenant.id);
        let mut skip = 0;
        loop {
            let query = appfence_core::odata::Query {
                skip,
                top: Some(appfence_core::odata::MAX_TOP),
                ..Default::default()
            };
            let page = store
                .list_machines(&tenant.id, &appfence_core::rbac::DeviceScope::All, &query)
                .await?;
            let changes = regroup(rbac, &page.items);
            if !changes.is_empty() {
                store.set_machine_groups(&tenant.id, &changes).await?;
                moved += changes.len();
            }
            if !page.more {
                break;
            }
            skip += page.items.len() as u32;
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests;
