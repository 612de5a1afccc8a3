//! The Alert entity (MDE's alert resource type), its evidence and comments, and the
//! bodies of Update alert and Batch update alerts. Keys are in the order MDE sends them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// An alert, as `GET /api/alerts/{id}` answers. Fields appfence has no value for
/// (incidents, investigations, threat names) are present and `null`, as MDE sends them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    pub id: String,
    pub incident_id: Option<i64>,
    pub investigation_id: Option<i64>,
    pub assigned_to: Option<String>,
    /// `UnSpecified`, `Informational`, `Low`, `Medium` or `High`.
    pub severity: String,
    /// `Unknown`, `New`, `InProgress` or `Resolved`.
    pub status: String,
    /// `TruePositive`, `InformationalExpectedActivity` or `FalsePositive`.
    pub classification: Option<String>,
    pub determination: Option<String>,
    pub investigation_state: Option<String>,
    pub detection_source: String,
    pub detector_id: String,
    pub category: String,
    pub threat_family_name: Option<String>,
    pub title: String,
    pub description: String,
    pub alert_creation_time: Timestamp,
    pub first_event_time: Option<Timestamp>,
    pub last_event_time: Option<Timestamp>,
    pub last_update_time: Timestamp,
    pub resolved_time: Option<Timestamp>,
    pub machine_id: String,
    pub computer_dns_name: Option<String>,
    pub rbac_group_name: Option<String>,
    pub aad_tenant_id: String,
    pub threat_name: Option<String>,
    pub mitre_techniques: Vec<String>,
    pub related_user: Option<RelatedUser>,
    pub comments: Vec<AlertComment>,
    /// Empty unless the request asked for `$expand=evidence` (a single alert always
    /// carries it).
    pub evidence: Vec<AlertEvidence>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelatedUser {
    pub user_name: String,
    pub domain_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertComment {
    pub comment: String,
    pub created_by: String,
    pub created_time: Timestamp,
}

/// One piece of evidence: a `File`, a `Process` or a `User`. Every key is always
/// present, `null` where it does not apply, as MDE sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertEvidence {
    pub entity_type: String,
    pub evidence_creation_time: Option<Timestamp>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub file_name: Option<String>,
    /// The directory of the file, as MDE splits them.
    pub file_path: Option<String>,
    pub process_id: Option<i64>,
    pub process_command_line: Option<String>,
    pub process_creation_time: Option<Timestamp>,
    pub parent_process_id: Option<i64>,
    pub parent_process_creation_time: Option<Timestamp>,
    pub parent_process_file_name: Option<String>,
    pub parent_process_file_path: Option<String>,
    pub ip_address: Option<String>,
    pub url: Option<String>,
    pub registry_key: Option<String>,
    pub registry_hive: Option<String>,
    pub registry_value_type: Option<String>,
    pub registry_value: Option<String>,
    pub account_name: Option<String>,
    pub domain_name: Option<String>,
    pub user_sid: Option<String>,
    pub aad_user_id: Option<String>,
    pub user_principal_name: Option<String>,
    /// `Blocked` (the execution was denied), `Detected` (allowed and reported).
    pub detection_status: Option<String>,
}

/// The fields Update alert and Batch update alerts change (absent: unchanged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `POST /api/alerts/batchUpdate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertBatchUpdate {
    pub alert_ids: Vec<String>,
    #[serde(flatten)]
    pub update: AlertUpdate,
}
