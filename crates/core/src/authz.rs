//! Who may call which API: the `roles` claim of application tokens, per endpoint.

use crate::Error;

/// The public APIs, each with its own permission and rate-limit bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    RestrictCodeExecution,
    UnrestrictCodeExecution,
    GetMachineAction,
    ListMachineActions,
    CancelMachineAction,
    ListMachines,
    GetMachine,
}

pub const ROLE_RESTRICT: &str = "Machine.RestrictExecution";
pub const ROLE_READ_ALL: &str = "Machine.Read.All";
pub const ROLE_READ_WRITE_ALL: &str = "Machine.ReadWrite.All";

/// Every application role appfence knows, for validating `app create --role`.
pub const KNOWN_APP_ROLES: &[&str] = &[ROLE_RESTRICT, ROLE_READ_ALL, ROLE_READ_WRITE_ALL];

impl Api {
    /// Any one of these application roles grants access.
    pub fn app_roles(self) -> &'static [&'static str] {
        match self {
            Api::RestrictCodeExecution
            | Api::UnrestrictCodeExecution
            | Api::CancelMachineAction => &[ROLE_RESTRICT],
            Api::GetMachineAction
            | Api::ListMachineActions
            | Api::ListMachines
            | Api::GetMachine => &[ROLE_READ_ALL, ROLE_READ_WRITE_ALL],
        }
    }

    /// A stable name, used as the rate-limit bucket.
    pub fn name(self) -> &'static str {
        match self {
            Api::RestrictCodeExecution => "restrictCodeExecution",
            Api::UnrestrictCodeExecution => "unrestrictCodeExecution",
            Api::GetMachineAction => "getMachineAction",
            Api::ListMachineActions => "listMachineActions",
            Api::CancelMachineAction => "cancelMachineAction",
            Api::ListMachines => "listMachines",
            Api::GetMachine => "getMachine",
        }
    }
}

/// Who is calling, as established from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub caller: Caller,
    pub roles: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Application {
        client_id: String,
        display_name: String,
    },
}

impl Principal {
    /// The `requestor` recorded on actions this principal creates.
    pub fn requestor(&self) -> &str {
        match &self.caller {
            Caller::Application { display_name, .. } => display_name,
        }
    }

    /// The key of this caller for rate limiting.
    pub fn caller_key(&self) -> &str {
        match &self.caller {
            Caller::Application { client_id, .. } => client_id,
        }
    }

    /// `Forbidden`, naming the missing roles, unless this principal may call `api`.
    pub fn authorize(&self, api: Api) -> Result<(), Error> {
        let needed = api.app_roles();
        if needed
            .iter()
            .any(|r| self.roles.iter().any(|have| have == r))
        {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "Missing application roles. API required roles: {}",
                needed.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(roles: &[&str]) -> Principal {
        Principal {
            tenant_id: "t".into(),
            caller: Caller::Application {
                client_id: "c".into(),
                display_name: "App".into(),
            },
            roles: roles.iter().map(|s| s.to_string()).collect(),
        }
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
}
