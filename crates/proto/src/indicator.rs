//! The Indicator entity of MDE's indicators API (`/api/indicators`), and the appfence
//! extensions that show what the agent does on a machine: its denial events and its
//! enforcement state.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::agent::{DenialKind, DesiredState, EnforcementState};
use crate::Timestamp;

/// An indicator, with keys in the order the real service sends them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Indicator {
    /// Present on single-entity responses only.
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    /// A number, sent as a string.
    pub id: String,
    pub indicator_value: String,
    /// `FileSha256` (the only type appfence accepts).
    pub indicator_type: String,
    /// `Block`, `AlertAndBlock`, `BlockAndRemediate`, `Audit`, `Alert` or `Allowed`.
    pub action: String,
    pub application: Option<String>,
    /// Display name of the application, or UPN of the user, that submitted it.
    pub source: String,
    /// `AadApp` or `User`.
    pub source_type: String,
    pub title: String,
    pub creation_time_date_time_utc: Timestamp,
    /// Client id of the application, or UPN of the user, that submitted it.
    pub created_by: String,
    pub expiration_time: Option<Timestamp>,
    pub last_update_time: Timestamp,
    pub last_updated_by: Option<String>,
    /// `Informational`, `Low`, `Medium` or `High`.
    pub severity: String,
    pub description: String,
    pub recommended_actions: Option<String>,
    /// The device groups the indicator applies to; empty: every device of the tenant.
    pub rbac_group_names: Vec<String>,
    /// Their `rbacGroupId`s, as strings.
    pub rbac_group_ids: Vec<String>,
    pub generate_alert: bool,
}

/// The answer to `POST /api/indicators/import`: `{"value": [...]}`, as MDE's example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IndicatorImportResponse {
    pub value: Vec<IndicatorImportResult>,
}

/// One result of `POST /api/indicators/import`, in the order of the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndicatorImportResult {
    /// The stored indicator's id; null when this one failed.
    pub id: Option<String>,
    /// The submitted `indicatorValue`, as sent.
    pub indicator: String,
    pub is_failed: bool,
    /// Why this one failed, naming the field; null when it succeeded.
    pub failure_reason: Option<String>,
}

/// One denied (or, in monitor mode, would-be denied) execution on a machine, as
/// `GET /api/machines/{id}/events` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineEvent {
    pub time: Timestamp,
    pub path: String,
    pub sha256: Option<String>,
    pub pid: u32,
    pub uid: Option<u32>,
    pub parent: Option<String>,
    /// `exec` or `elfOpen`.
    #[schema(value_type = String)]
    pub kind: DenialKind,
    /// True when nothing was denied (monitor mode, or an audit indicator).
    pub monitor: bool,
    pub machine_id: String,
    pub computer_dns_name: String,
    /// `blocked` or `audited` when a file indicator decided it; absent when the device's
    /// restriction did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub rule: Option<crate::agent::RuleOutcome>,
    /// The indicator behind `rule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator_id: Option<String>,
    /// The indicator asked for an alert (`generateAlert`).
    #[serde(default)]
    pub alert: bool,
}

/// `GET /api/machines/{id}/enforcement`: what the agent last reported next to what the
/// server wants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineEnforcement {
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    pub machine_id: String,
    pub computer_dns_name: String,
    /// When the agent last reported (its latest heartbeat).
    pub last_seen: Option<Timestamp>,
    /// The agent's own report: restricted, since, mode, coverage, allowlist version,
    /// time spent unprotected.
    #[schema(value_type = Object)]
    pub reported: EnforcementState,
    /// What the server wants: restricted, the action that decided it, the mode and the
    /// tenant's allowlist version.
    #[schema(value_type = Object)]
    pub desired: DesiredState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indicator_keys_are_camel_case_in_mde_order() {
        let i = Indicator {
            odata_context: None,
            id: "7".into(),
            indicator_value: "ab".repeat(32),
            indicator_type: "FileSha256".into(),
            action: "Allowed".into(),
            application: None,
            source: "SOAR".into(),
            source_type: "AadApp".into(),
            title: "t".into(),
            creation_time_date_time_utc: Timestamp::from_unix_seconds(1),
            created_by: "c".into(),
            expiration_time: None,
            last_update_time: Timestamp::from_unix_seconds(1),
            last_updated_by: None,
            severity: "Informational".into(),
            description: "d".into(),
            recommended_actions: None,
            rbac_group_names: vec![],
            rbac_group_ids: vec![],
            generate_alert: false,
        };
        let text = serde_json::to_string(&i).unwrap();
        assert!(text.starts_with(r#"{"id":"7","indicatorValue":"#), "{text}");
        assert!(text.contains(r#""creationTimeDateTimeUtc":"1970-01-01T00:00:01Z""#));
        assert!(text.ends_with(r#""rbacGroupNames":[],"rbacGroupIds":[],"generateAlert":false}"#));
    }
}
