//! Who may call which API. Application tokens carry application permissions in `roles`;
//! user tokens carry delegated permissions in `scp`, and the user's portal role and
//! device groups (see [`crate::rbac`]) narrow them further.

use crate::rbac::Permission;
use crate::Error;

/// The public APIs, each with its own permission and rate-limit bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    RestrictCodeExecution,
    UnrestrictCodeExecution,
    /// `POST /api/machines/{id}/offboard`.
    OffboardMachine,
    GetMachineAction,
    ListMachineActions,
    CancelMachineAction,
    ListMachines,
    GetMachine,
    /// appfence extension: `GET /api/machines/{id}/events`.
    ListMachineEvents,
    /// appfence extension: `GET /api/machines/{id}/enforcement`.
    GetMachineEnforcement,
    SubmitIndicator,
    /// `POST /api/indicators/import`.
    ImportIndicators,
    ListIndicators,
    DeleteIndicator,
    /// `PATCH /api/machines/{id}` (MDE's "Update machine": tags and device value).
    UpdateMachine,
    /// `GET /api/machines/findbyip(ip=...,timestamp=...)`.
    FindMachinesByIp,
    /// `GET /api/machines/find(timestamp=...,key=...)`.
    FindMachineByIp,
    /// `GET /api/machines/findbytag?tag=...`.
    FindMachinesByTag,
    /// `POST /api/machines/{id}/tags`.
    TagMachine,
    /// `POST /api/machines/AddOrRemoveTagForMultipleMachines`.
    TagMachines,
    /// `GET /api/alerts`.
    ListAlerts,
    /// `GET /api/alerts/{id}`.
    GetAlert,
    /// `PATCH /api/alerts/{id}`.
    UpdateAlert,
    /// `POST /api/alerts/batchUpdate`.
    BatchUpdateAlerts,
    /// `GET /api/machines/{id}/alerts`.
    ListMachineAlerts,
    /// `GET /api/alerts/{id}/machine`.
    GetAlertMachine,
}

pub const ROLE_RESTRICT: &str = "Machine.RestrictExecution";
/// MDE's "Offboard machine".
pub const ROLE_OFFBOARD: &str = "Machine.Offboard";
pub const ROLE_READ_ALL: &str = "Machine.Read.All";
pub const ROLE_READ_WRITE_ALL: &str = "Machine.ReadWrite.All";
/// Every indicator of the tenant.
pub const ROLE_TI_READ_WRITE_ALL: &str = "Ti.ReadWrite.All";
/// Only the indicators the application submitted itself.
pub const ROLE_TI_READ_WRITE: &str = "Ti.ReadWrite";
pub const ROLE_ALERT_READ_ALL: &str = "Alert.Read.All";
pub const ROLE_ALERT_READ_WRITE_ALL: &str = "Alert.ReadWrite.All";

pub const SCOPE_RESTRICT: &str = "Machine.RestrictExecution";
pub const SCOPE_OFFBOARD: &str = "Machine.Offboard";
pub const SCOPE_READ: &str = "Machine.Read";
pub const SCOPE_READ_WRITE: &str = "Machine.ReadWrite";
pub const SCOPE_TI_READ_WRITE: &str = "Ti.ReadWrite";
pub const SCOPE_ALERT_READ: &str = "Alert.Read";
pub const SCOPE_ALERT_READ_WRITE: &str = "Alert.ReadWrite";

/// Every application role appfence knows, for validating `app create --role`.
pub const KNOWN_APP_ROLES: &[&str] = &[
    ROLE_RESTRICT,
    ROLE_OFFBOARD,
    ROLE_READ_ALL,
    ROLE_READ_WRITE_ALL,
    ROLE_TI_READ_WRITE_ALL,
    ROLE_TI_READ_WRITE,
    ROLE_ALERT_READ_ALL,
    ROLE_ALERT_READ_WRITE_ALL,
];

/// The delegated scopes the built-in issuer puts in user tokens: everything a user can be
/// allowed; the user's portal role decides what is actually allowed.
pub const DELEGATED_SCOPES: &[&str] = &[
    SCOPE_READ,
    SCOPE_READ_WRITE,
    SCOPE_RESTRICT,
    SCOPE_OFFBOARD,
    SCOPE_TI_READ_WRITE,
    SCOPE_ALERT_READ,
    SCOPE_ALERT_READ_WRITE,
];

impl Api {
    /// Any one of these application roles grants access.
    pub fn app_roles(self) -> &'static [&'static str] {
        match self {
            Api::RestrictCodeExecution
            | Api::UnrestrictCodeExecution
            | Api::CancelMachineAction => &[ROLE_RESTRICT],
            Api::OffboardMachine => &[ROLE_OFFBOARD],
            Api::GetMachineAction
            | Api::ListMachineActions
            | Api::ListMachines
            | Api::GetMachine
            | Api::ListMachineEvents
            | Api::GetMachineEnforcement
            | Api::FindMachinesByIp
            | Api::FindMachineByIp
            | Api::FindMachinesByTag
            | Api::GetAlertMachine => &[ROLE_READ_ALL, ROLE_READ_WRITE_ALL],
            Api::TagMachine | Api::TagMachines | Api::UpdateMachine => &[ROLE_READ_WRITE_ALL],
            Api::ListAlerts | Api::GetAlert | Api::ListMachineAlerts => {
                &[ROLE_ALERT_READ_ALL, ROLE_ALERT_READ_WRITE_ALL]
            }
            Api::UpdateAlert | Api::BatchUpdateAlerts => &[ROLE_ALERT_READ_WRITE_ALL],
            // MDE: either role; with only Ti.ReadWrite an application sees and changes
            // just the indicators it submitted (see [`Principal::indicator_scope`]).
            Api::SubmitIndicator
            | Api::ImportIndicators
            | Api::ListIndicators
            | Api::DeleteIndicator => &[ROLE_TI_READ_WRITE_ALL, ROLE_TI_READ_WRITE],
        }
    }

    /// Any one of these delegated scopes (in `scp`) lets a user token call the API.
    pub fn delegated_scopes(self) -> &'static [&'static str] {
        match self {
            Api::RestrictCodeExecution
            | Api::UnrestrictCodeExecution
            | Api::CancelMachineAction => &[SCOPE_RESTRICT],
            Api::OffboardMachine => &[SCOPE_OFFBOARD],
            Api::GetMachineAction
            | Api::ListMachineActions
            | Api::ListMachines
            | Api::GetMachine
            | Api::ListMachineEvents
            | Api::GetMachineEnforcement
            | Api::FindMachinesByIp
            | Api::FindMachineByIp
            | Api::FindMachinesByTag
            | Api::GetAlertMachine => &[SCOPE_READ, SCOPE_READ_WRITE],
            Api::TagMachine | Api::TagMachines | Api::UpdateMachine => &[SCOPE_READ_WRITE],
            Api::ListAlerts | Api::GetAlert | Api::ListMachineAlerts => {
                &[SCOPE_ALERT_READ, SCOPE_ALERT_READ_WRITE]
            }
            Api::UpdateAlert | Api::BatchUpdateAlerts => &[SCOPE_ALERT_READ_WRITE],
            Api::SubmitIndicator
            | Api::ImportIndicators
            | Api::ListIndicators
            | Api::DeleteIndicator => &[SCOPE_TI_READ_WRITE],
        }
    }

    /// The portal role permission a user needs, as MDE's RBAC names it.
    pub fn user_permission(self) -> Permission {
        match self {
            Api::RestrictCodeExecution
            | Api::UnrestrictCodeExecution
            | Api::CancelMachineAction => Permission::ActiveRemediationActions,
            Api::GetMachineAction
            | Api::ListMachineActions
            | Api::ListMachines
            | Api::GetMachine
            | Api::ListMachineEvents
            | Api::GetMachineEnforcement
            | Api::FindMachinesByIp
            | Api::FindMachineByIp
            | Api::FindMachinesByTag
            | Api::ListAlerts
            | Api::GetAlert
            | Api::ListMachineAlerts
            | Api::GetAlertMachine => Permission::ViewData,
            // MDE's Update machine and Update alert pages: "at least the following role
            // permission: 'Alerts investigation'".
            Api::UpdateMachine | Api::UpdateAlert | Api::BatchUpdateAlerts => {
                Permission::AlertsInvestigation
            }
            // MDE: "Manage security setting" for tag changes; "Manage security settings
            // in Security Center" is also what lets a user "onboard and offboard devices".
            Api::OffboardMachine
            | Api::SubmitIndicator
            | Api::ImportIndicators
            | Api::ListIndicators
            | Api::DeleteIndicator
            | Api::TagMachine
            | Api::TagMachines => Permission::ManageSecuritySettings,
        }
    }

    /// A stable name, used as the rate-limit bucket.
    pub fn name(self) -> &'static str {
        match self {
            Api::RestrictCodeExecution => "restrictCodeExecution",
            Api::UnrestrictCodeExecution => "unrestrictCodeExecution",
            Api::OffboardMachine => "offboardMachine",
            Api::GetMachineAction => "getMachineAction",
            Api::ListMachineActions => "listMachineActions",
            Api::CancelMachineAction => "cancelMachineAction",
            Api::ListMachines => "listMachines",
            Api::GetMachine => "getMachine",
            Api::ListMachineEvents => "listMachineEvents",
            Api::GetMachineEnforcement => "getMachineEnforcement",
            Api::SubmitIndicator => "submitIndicator",
            Api::ImportIndicators => "importIndicators",
            Api::UpdateMachine => "updateMachine",
            Api::ListIndicators => "listIndicators",
            Api::DeleteIndicator => "deleteIndicator",
            Api::FindMachinesByIp => "findMachinesByIp",
            Api::FindMachineByIp => "findMachineByIp",
            Api::FindMachinesByTag => "findMachinesByTag",
            Api::TagMachine => "tagMachine",
            Api::TagMachines => "tagMachines",
            Api::ListAlerts => "listAlerts",
            Api::GetAlert => "getAlert",
            Api::UpdateAlert => "updateAlert",
            Api::BatchUpdateAlerts => "batchUpdateAlerts",
            Api::ListMachineAlerts => "listMachineAlerts",
            Api::GetAlertMachine => "getAlertMachine",
        }
    }

    /// The limits of this API, from the configured ones (MDE's 100 a minute and 1,500
    /// an hour by default), in MDE's proportions: Batch update alerts has a tenth of the
    /// minute's and a third of the hour's (MDE: 10 and 500), Import Indicators 30% of
    /// the minute's (MDE: 30).
    pub fn rate_limits(
        self,
        base: crate::ratelimit::RateLimitPolicy,
    ) -> crate::ratelimit::RateLimitPolicy {
        match self {
            Api::BatchUpdateAlerts => crate::ratelimit::RateLimitPolicy {
                per_minute: (base.per_minute / 10).max(1),
                per_hour: (base.per_hour / 3).max(1),
            },
            Api::ImportIndicators => crate::ratelimit::RateLimitPolicy {
                per_minute: (base.per_minute.saturating_mul(3) / 10).max(1),
                per_hour: base.per_hour,
            },
            _ => base,
        }
    }
}

/// Which indicators a caller may see and change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndicatorScope {
    All,
    /// Only those whose `createdBy` is this (an application with `Ti.ReadWrite` alone).
    CreatedBy(String),
}

/// Who is calling, as established from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub caller: Caller,
    /// Application permissions (`roles`); empty for users.
    pub roles: Vec<String>,
    /// Delegated permissions (`scp`); empty for applications.
    pub scopes: Vec<String>,
    /// The user's groups (`groups`), which map to portal roles and device groups.
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Application {
        client_id: String,
        display_name: String,
    },
    User {
        /// `oid`: stable across renames, so it keys the rate limit.
        object_id: String,
        /// `upn` or `preferred_username`, recorded as the `requestor`.
        upn: String,
    },
}

impl Principal {
    pub fn application(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        display_name: impl Into<String>,
        roles: Vec<String>,
    ) -> Self {
        Principal {
            tenant_id: tenant_id.into(),
            caller: Caller::Application {
                client_id: client_id.into(),
                display_name: display_name.into(),
            },
            roles,
            scopes: Vec::new(),
            groups: Vec::new(),
        }
    }

    pub fn user(
        tenant_id: impl Into<String>,
        object_id: impl Into<String>,
        upn: impl Into<String>,
        scopes: Vec<String>,
        groups: Vec<String>,
    ) -> Self {
        Principal {
            tenant_id: tenant_id.into(),
            caller: Caller::User {
                object_id: object_id.into(),
                upn: upn.into(),
            },
            roles: Vec::new(),
            scopes,
            groups,
        }
    }

    pub fn is_user(&self) -> bool {
        matches!(self.caller, Caller::User { .. })
    }

    /// The `requestor` recorded on actions this principal creates: the application's
    /// display name, or the user's UPN.
    pub fn requestor(&self) -> &str {
        match &self.caller {
            Caller::Application { display_name, .. } => display_name,
            Caller::User { upn, .. } => upn,
        }
    }

    /// `createdBy` of the indicators this principal submits: the application's client
    /// id, or the user's UPN (as MDE records them).
    pub fn indicator_creator(&self) -> &str {
        match &self.caller {
            Caller::Application { client_id, .. } => client_id,
            Caller::User { upn, .. } => upn,
        }
    }

    /// MDE's `sourceType`: `AadApp` for applications, `User` for users.
    pub fn source_type(&self) -> &'static str {
        if self.is_user() {
            "User"
        } else {
            "AadApp"
        }
    }

    /// The indicators this principal may see and change, once [`Self::authorize`] let it
    /// call an indicators API: all of them for users and for applications with
    /// `Ti.ReadWrite.All`; only their own for applications with `Ti.ReadWrite` alone.
    pub fn indicator_scope(&self) -> IndicatorScope {
        match &self.caller {
            Caller::Application { client_id, .. }
                if !self.roles.iter().any(|r| r == ROLE_TI_READ_WRITE_ALL) =>
            {
                IndicatorScope::CreatedBy(client_id.clone())
            }
            _ => IndicatorScope::All,
        }
    }

    /// The key of this caller for rate limiting; applications and users never share one.
    pub fn caller_key(&self) -> String {
        match &self.caller {
            Caller::Application { client_id, .. } => format!("app:{client_id}"),
            Caller::User { object_id, .. } => format!("user:{object_id}"),
        }
    }

    /// `Forbidden`, naming what is missing, unless the token itself carries the
    /// permission for `api`: an application role, or a delegated scope for a user. The
    /// user's portal role and device groups are checked by [`crate::rbac`].
    pub fn authorize(&self, api: Api) -> Result<(), Error> {
        let (have, needed, what) = match self.caller {
            Caller::Application { .. } => (&self.roles, api.app_roles(), "application roles"),
            Caller::User { .. } => (&self.scopes, api.delegated_scopes(), "delegated scopes"),
        };
        if needed.iter().any(|r| have.iter().any(|h| h == r)) {
            return Ok(());
        }
        let kind = if self.is_user() { "scopes" } else { "roles" };
        Err(Error::Forbidden(format!(
            "Missing {what}. API required {kind}: {}",
            needed.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(roles: &[&str]) -> Principal {
        Principal::application(
            "t",
            "c",
            "App",
            roles.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn user(scopes: &[&str]) -> Principal {
        Principal::user(
            "t",
            "oid-1",
            "ana@example.com",
            scopes.iter().map(|s| s.to_string()).collect(),
            vec![],
        )
    }

    #[test]
    fn roles_are_checked_per_api() {
        assert!(app(&[ROLE_RESTRICT])
            .authorize(Api::RestrictCodeExecution)
            .is_ok());
        assert_eq!(
            app(&[ROLE_READ_ALL]).authorize(Api::RestrictCodeExecution),
            Err(Error::Forbidden(
                "Missing application roles. API required roles: Machine.RestrictExecution".into()
            ))
        );
        assert!(app(&[ROLE_READ_WRITE_ALL])
            .authorize(Api::ListMachines)
            .is_ok());
        assert!(app(&[ROLE_RESTRICT])
            .authorize(Api::GetMachineAction)
            .is_err());
    }

    #[test]
    fn users_need_a_delegated_scope_and_application_roles_do_not_count_for_them() {
        assert!(user(&[SCOPE_RESTRICT])
            .authorize(Api::UnrestrictCodeExecution)
            .is_ok());
        assert!(user(&[SCOPE_READ]).authorize(Api::GetMachine).is_ok());
        assert_eq!(
            user(&[SCOPE_READ]).authorize(Api::RestrictCodeExecution),
            Err(Error::Forbidden(
                "Missing delegated scopes. API required scopes: Machine.RestrictExecution".into()
            ))
        );
        let mut with_roles = user(&[]);
        with_roles.roles = vec![ROLE_READ_ALL.into()];
        assert!(with_roles.authorize(Api::ListMachines).is_err());
    }

    #[test]
    fn indicator_permissions_follow_mde() {
        for api in [
            Api::SubmitIndicator,
            Api::ImportIndicators,
            Api::ListIndicators,
            Api::DeleteIndicator,
        ] {
            assert!(app(&[ROLE_TI_READ_WRITE_ALL]).authorize(api).is_ok());
            assert!(app(&[ROLE_TI_READ_WRITE]).authorize(api).is_ok());
            assert_eq!(
                app(&[ROLE_READ_WRITE_ALL, ROLE_RESTRICT]).authorize(api),
                Err(Error::Forbidden(
                    "Missing application roles. API required roles: Ti.ReadWrite.All, Ti.ReadWrite"
                        .into()
                ))
            );
            assert!(user(&[SCOPE_TI_READ_WRITE]).authorize(api).is_ok());
            assert!(user(&[SCOPE_READ_WRITE]).authorize(api).is_err());
            assert_eq!(api.user_permission(), Permission::ManageSecuritySettings);
        }
        assert_eq!(
            app(&[ROLE_TI_READ_WRITE_ALL]).indicator_scope(),
            IndicatorScope::All
        );
        assert_eq!(
            app(&[ROLE_TI_READ_WRITE]).indicator_scope(),
            IndicatorScope::CreatedBy("c".into())
        );
        assert_eq!(user(&[]).indicator_scope(), IndicatorScope::All);
        assert_eq!(app(&[]).indicator_creator(), "c");
        assert_eq!(user(&[]).indicator_creator(), "ana@example.com");
        assert_eq!(
            (app(&[]).source_type(), user(&[]).source_type()),
            ("AadApp", "User")
        );
    }

    #[test]
    fn offboarding_needs_its_own_permission() {
        assert!(app(&[ROLE_OFFBOARD])
            .authorize(Api::OffboardMachine)
            .is_ok());
        assert_eq!(
            app(&[ROLE_RESTRICT, ROLE_READ_WRITE_ALL]).authorize(Api::OffboardMachine),
            Err(Error::Forbidden(
                "Missing application roles. API required roles: Machine.Offboard".into()
            ))
        );
        assert!(app(&[ROLE_OFFBOARD])
            .authorize(Api::RestrictCodeExecution)
            .is_err());
        assert!(user(&[SCOPE_OFFBOARD])
            .authorize(Api::OffboardMachine)
            .is_ok());
        assert!(user(&[SCOPE_RESTRICT])
            .authorize(Api::OffboardMachine)
            .is_err());
        assert_eq!(
            Api::OffboardMachine.user_permission(),
            Permission::ManageSecuritySettings
        );
        assert!(KNOWN_APP_ROLES.contains(&"Machine.Offboard"));
        assert!(DELEGATED_SCOPES.contains(&"Machine.Offboard"));
    }

    #[test]
    fn requestor_and_rate_key_depend_on_the_kind_of_caller() {
        assert_eq!(app(&[]).requestor(), "App");
        assert_eq!(user(&[]).requestor(), "ana@example.com");
        assert_eq!(app(&[]).caller_key(), "app:c");
        assert_eq!(user(&[]).caller_key(), "user:oid-1");
    }

    #[test]
    fn some_apis_have_mde_s_own_limits() {
        use crate::ratelimit::RateLimitPolicy;
        let base = RateLimitPolicy::default();
        let limits = |api: Api| {
            let p = api.rate_limits(base);
            (p.per_minute, p.per_hour)
        };
        assert_eq!(limits(Api::ListAlerts), (100, 1500));
        assert_eq!(limits(Api::BatchUpdateAlerts), (10, 500));
        assert_eq!(limits(Api::ImportIndicators), (30, 1500));
        let tiny = RateLimitPolicy {
            per_minute: 1,
            per_hour: 1,
        };
        assert_eq!(Api::BatchUpdateAlerts.rate_limits(tiny), tiny, "never zero");
        assert_eq!(Api::ImportIndicators.rate_limits(tiny), tiny);
    }
}
