//! MDE's role-based access for users: portal roles grant permissions to user groups, and
//! device groups decide which devices a user may see and act on. Application tokens are
//! not group-scoped.
//!
//! A device belongs to the best-ranked device group whose rule matches it (rank 1 is
//! evaluated first, as in the portal), otherwise to "Ungrouped devices" (id 0, no name).
//! A device group without user groups, and the ungrouped devices, are open to every user.

use std::collections::{BTreeSet, HashSet};

use crate::authz::{Api, Principal};
use crate::records::MachineRecord;
use crate::Error;

/// The `rbacGroupId` of devices in no device group.
pub const UNGROUPED_ID: i64 = 0;

/// Portal role permissions, named as MDE names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    ViewData,
    AlertsInvestigation,
    ActiveRemediationActions,
    LiveResponseCapabilities,
    ManageSecuritySettings,
    ManagePortalSystemSettings,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::ViewData,
        Permission::AlertsInvestigation,
        Permission::ActiveRemediationActions,
        Permission::LiveResponseCapabilities,
        Permission::ManageSecuritySettings,
        Permission::ManagePortalSystemSettings,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::ViewData => "View data",
            Permission::AlertsInvestigation => "Alerts investigation",
            Permission::ActiveRemediationActions => "Active remediation actions",
            Permission::LiveResponseCapabilities => "Live response capabilities",
            Permission::ManageSecuritySettings => "Manage security settings",
            Permission::ManagePortalSystemSettings => "Manage portal system settings",
        }
    }

    /// Case-insensitive, so that a config written from the portal's labels works.
    pub fn parse(name: &str) -> Result<Permission, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown permission '{name}'; known permissions: {}",
                    Permission::ALL.map(Permission::name).join(", ")
                )
            })
    }
}

/// A portal role: permissions for the members of some user groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub permissions: BTreeSet<Permission>,
    pub user_groups: Vec<String>,
}

/// Which devices a device group holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceRule {
    /// `computerDnsName` starts with this (ASCII case-insensitive).
    NamePrefix(String),
    /// One of the device's tags equals this (ASCII case-insensitive).
    Tag(String),
    /// `osPlatform` equals this (ASCII case-insensitive).
    OsPlatform(String),
}

impl DeviceRule {
    pub fn matches(&self, m: &MachineRecord) -> bool {
        match self {
            DeviceRule::NamePrefix(p) => m
                .computer_dns_name
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            DeviceRule::Tag(t) => m
                .machine_tags
                .iter()
                .any(|have| have.eq_ignore_ascii_case(t)),
            DeviceRule::OsPlatform(os) => m.os_platform.eq_ignore_ascii_case(os),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceGroup {
    /// `rbacGroupId`: never 0.
    pub id: i64,
    pub name: String,
    /// 1 is evaluated first.
    pub rank: u32,
    pub rule: DeviceRule,
    /// Empty: open to every user.
    pub user_groups: Vec<String>,
}

/// A stable `rbacGroupId` for a device group declared without one: derived from its name
/// (FNV-1a), so that reordering or re-ranking groups never renumbers them.
pub fn default_group_id(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % 999_999) as i64 + 1
}

/// The devices a caller may see: every device, or those of some device groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceScope {
    All,
    /// `rbacGroupId`s, sorted; always holds [`UNGROUPED_ID`].
    Groups(Vec<i64>),
}

impl DeviceScope {
    pub fn allows(&self, rbac_group_id: i64) -> bool {
        match self {
            DeviceScope::All => true,
            DeviceScope::Groups(ids) => ids.binary_search(&rbac_group_id).is_ok(),
        }
    }

    /// `Forbidden`, naming the device group, unless the scope covers the device.
    pub fn check_device(&self, machine: &MachineRecord) -> Result<(), Error> {
        self.check_group(
            &machine.id,
            machine.rbac_group_id,
            machine.rbac_group_name.as_deref(),
        )
    }

    /// [`DeviceScope::check_device`] from the machine's id and device group alone.
    pub fn check_group(
        &self,
        machine_id: &str,
        rbac_group_id: i64,
        rbac_group_name: Option<&str>,
    ) -> Result<(), Error> {
        if self.allows(rbac_group_id) {
            return Ok(());
        }
        let group = rbac_group_name.unwrap_or("Ungrouped devices");
        Err(Error::Forbidden(format!(
            "User has no access to device group '{group}' of machine {machine_id}"
        )))
    }
}

/// One tenant's roles and device groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantRbac {
    roles: Vec<Role>,
    /// Sorted by rank.
    groups: Vec<DeviceGroup>,
}

impl TenantRbac {
    /// Checks that names, ranks and ids are unique and ids are not 0. The error names the
    /// offending entry.
    pub fn new(roles: Vec<Role>, mut groups: Vec<DeviceGroup>) -> Result<Self, String> {
        let mut role_names = HashSet::new();
        for r in &roles {
            if r.name.trim().is_empty() {
                return Err("a role has an empty name".into());
            }
            if !role_names.insert(r.name.to_lowercase()) {
                return Err(format!("role '{}' is declared twice", r.name));
            }
        }
        let (mut names, mut ranks, mut ids) = (HashSet::new(), HashSet::new(), HashSet::new());
        for g in &groups {
            if g.name.trim().is_empty() {
                return Err("a device group has an empty name".into());
            }
            if !names.insert(g.name.to_lowercase()) {
                return Err(format!("device group '{}' is declared twice", g.name));
            }
            if g.rank == 0 {
                return Err(format!(
                    "device group '{}': rank must be at least 1",
                    g.name
                ));
            }
            if !ranks.insert(g.rank) {
                return Err(format!(
                    "device group '{}': rank {} is already used by another group",
                    g.name, g.rank
                ));
            }
            if g.id <= 0 {
                return Err(format!(
                    "device group '{}': id must be a positive number (0 means ungrouped)",
                    g.name
                ));
            }
            if !ids.insert(g.id) {
                return Err(format!(
                    "device group '{}': id {} is already used by another group",
                    g.name, g.id
                ));
            }
        }
        groups.sort_by_key(|g| g.rank);
        Ok(TenantRbac { roles, groups })
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn device_groups(&self) -> &[DeviceGroup] {
        &self.groups
    }

    /// The `(rbacGroupId, rbacGroupName)` of a device.
    pub fn group_of(&self, machine: &MachineRecord) -> (i64, Option<String>) {
        self.groups
            .iter()
            .find(|g| g.rule.matches(machine))
            .map_or((UNGROUPED_ID, None), |g| (g.id, Some(g.name.clone())))
    }

    /// The permissions a user holds through the roles of their groups.
    pub fn permissions_of(&self, principal: &Principal) -> BTreeSet<Permission> {
        self.roles
            .iter()
            .filter(|r| shares_group(&r.user_groups, &principal.groups))
            .flat_map(|r| r.permissions.iter().copied())
            .collect()
    }

    /// The device groups a user may see, with the ungrouped devices.
    fn visible_groups(&self, principal: &Principal) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .groups
            .iter()
            .filter(|g| g.user_groups.is_empty() || shares_group(&g.user_groups, &principal.groups))
            .map(|g| g.id)
            .chain([UNGROUPED_ID])
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `principal` may call `api`, and on which devices. Applications need an
    /// application role and see every device; users need a delegated scope, the portal
    /// permission of the API, and see only their device groups.
    pub fn authorize(&self, principal: &Principal, api: Api) -> Result<DeviceScope, Error> {
        principal.authorize(api)?;
        if !principal.is_user() {
            return Ok(DeviceScope::All);
        }
        let needed = api.user_permission();
        if !self.permissions_of(principal).contains(&needed) {
            return Err(Error::Forbidden(format!(
                "Missing user permission. API required role permission: {}",
                needed.name()
            )));
        }
        Ok(DeviceScope::Groups(self.visible_groups(principal)))
    }
}

fn shares_group(wanted: &[String], have: &[String]) -> bool {
    wanted.iter().any(|w| have.iter().any(|h| h == w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{ROLE_READ_ALL, SCOPE_READ, SCOPE_RESTRICT};

    fn machine(name: &str, tags: &[&str], os: &str) -> MachineRecord {
        let mut m = crate::records::tests_support::machine(name);
        m.machine_tags = tags.iter().map(|t| t.to_string()).collect();
        m.os_platform = os.into();
        m
    }

    fn group(id: i64, name: &str, rank: u32, rule: DeviceRule, users: &[&str]) -> DeviceGroup {
        DeviceGroup {
            id,
            name: name.into(),
            rank,
            rule,
            user_groups: users.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn rbac() -> TenantRbac {
        TenantRbac::new(
            vec![
                Role {
                    name: "Tier 2".into(),
                    permissions: [Permission::ActiveRemediationActions, Permission::ViewData]
                        .into(),
                    user_groups: vec!["g-tier2".into()],
                },
                Role {
                    name: "Viewer".into(),
                    permissions: [Permission::ViewData].into(),
                    user_groups: vec!["g-view".into()],
                },
            ],
            vec![
                group(7, "Linux", 2, DeviceRule::OsPlatform("linux".into()), &[]),
                group(
                    5,
                    "Servers",
                    1,
                    DeviceRule::NamePrefix("srv-".into()),
                    &["g-srv"],
                ),
                group(9, "Prod", 3, DeviceRule::Tag("prod".into()), &["g-prod"]),
            ],
        )
        .unwrap()
    }

    fn user(groups: &[&str], scopes: &[&str]) -> Principal {
        Principal::user(
            "t",
            "oid",
            "u@example.com",
            scopes.iter().map(|s| s.to_string()).collect(),
            groups.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn the_best_ranked_matching_group_wins() {
        let r = rbac();
        assert_eq!(
            r.group_of(&machine("SRV-db1.corp", &["prod"], "Linux")),
            (5, Some("Servers".into()))
        );
        assert_eq!(
            r.group_of(&machine("web1", &["prod"], "Linux")),
            (7, Some("Linux".into()))
        );
        assert_eq!(
            r.group_of(&machine("web1", &["PROD"], "Windows10")),
            (9, Some("Prod".into()))
        );
        assert_eq!(r.group_of(&machine("web1", &[], "Windows10")), (0, None));
    }

    #[test]
    fn users_need_scope_permission_and_group_access() {
        let r = rbac();
        // Scope first.
        assert_eq!(
            r.authorize(
                &user(&["g-tier2"], &[SCOPE_READ]),
                Api::RestrictCodeExecution
            ),
            Err(Error::Forbidden(
                "Missing delegated scopes. API required scopes: Machine.RestrictExecution".into()
            ))
        );
        // Then the portal permission.
        assert_eq!(
            r.authorize(
                &user(&["g-view"], &[SCOPE_RESTRICT]),
                Api::RestrictCodeExecution
            ),
            Err(Error::Forbidden(
                "Missing user permission. API required role permission: Active remediation actions"
                    .into()
            ))
        );
        assert!(r
            .authorize(&user(&[], &[SCOPE_READ]), Api::ListMachines)
            .is_err());
        // Then the device groups: open groups and ungrouped for everyone.
        let scope = r
            .authorize(
                &user(&["g-tier2"], &[SCOPE_RESTRICT]),
                Api::RestrictCodeExecution,
            )
            .unwrap();
        assert_eq!(scope, DeviceScope::Groups(vec![0, 7]));
        let srv = machine("srv-1", &[], "Linux");
        let mut srv = srv;
        (srv.rbac_group_id, srv.rbac_group_name) = r.group_of(&srv);
        assert_eq!(
            scope.check_device(&srv),
            Err(Error::Forbidden(format!(
                "User has no access to device group 'Servers' of machine {}",
                srv.id
            )))
        );
        let scope = r
            .authorize(
                &user(&["g-tier2", "g-srv"], &[SCOPE_RESTRICT]),
                Api::CancelMachineAction,
            )
            .unwrap();
        assert_eq!(scope, DeviceScope::Groups(vec![0, 5, 7]));
        assert!(scope.check_device(&srv).is_ok());
    }

    #[test]
    fn applications_are_not_group_scoped() {
        let app = Principal::application("t", "c", "App", vec![ROLE_READ_ALL.into()]);
        assert_eq!(
            rbac().authorize(&app, Api::GetMachine),
            Ok(DeviceScope::All)
        );
        assert!(rbac().authorize(&app, Api::RestrictCodeExecution).is_err());
    }

    #[test]
    fn declarations_are_validated() {
        let g = |id, name: &str, rank| group(id, name, rank, DeviceRule::Tag("x".into()), &[]);
        assert!(TenantRbac::new(vec![], vec![g(1, "a", 1), g(2, "A", 2)])
            .unwrap_err()
            .contains("declared twice"));
        assert!(TenantRbac::new(vec![], vec![g(1, "a", 1), g(2, "b", 1)])
            .unwrap_err()
            .contains("rank 1 is already used"));
        assert!(TenantRbac::new(vec![], vec![g(1, "a", 1), g(1, "b", 2)])
            .unwrap_err()
            .contains("id 1 is already used"));
        assert!(TenantRbac::new(vec![], vec![g(0, "a", 1)])
            .unwrap_err()
            .contains("id must be a positive number"));
        assert!(TenantRbac::new(vec![], vec![g(1, "a", 0)])
            .unwrap_err()
            .contains("rank must be at least 1"));
        assert_eq!(Permission::parse("view DATA"), Ok(Permission::ViewData));
        assert!(Permission::parse("Root")
            .unwrap_err()
            .contains("known permissions"));
        let id = default_group_id("Servers");
        assert!((1..=999_999).contains(&id));
        assert_eq!(id, default_group_id("Servers"));
        assert_ne!(id, default_group_id("Servers2"));
    }
}
