//! The MachineAction entity.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// The kinds of machine action MDE knows. appfence creates the first two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum ActionType {
    RestrictCodeExecution,
    UnrestrictCodeExecution,
    RunAntiVirusScan,
    Offboard,
    LiveResponse,
    CollectInvestigationPackage,
    Isolate,
    Unisolate,
    StopAndQuarantineFile,
}

impl ActionType {
    pub const ALL: [ActionType; 9] = [
        ActionType::RestrictCodeExecution,
        ActionType::UnrestrictCodeExecution,
        ActionType::RunAntiVirusScan,
        ActionType::Offboard,
        ActionType::LiveResponse,
        ActionType::CollectInvestigationPackage,
        ActionType::Isolate,
        ActionType::Unisolate,
        ActionType::StopAndQuarantineFile,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::RestrictCodeExecution => "RestrictCodeExecution",
            ActionType::UnrestrictCodeExecution => "UnrestrictCodeExecution",
            ActionType::RunAntiVirusScan => "RunAntiVirusScan",
            ActionType::Offboard => "Offboard",
            ActionType::LiveResponse => "LiveResponse",
            ActionType::CollectInvestigationPackage => "CollectInvestigationPackage",
            ActionType::Isolate => "Isolate",
            ActionType::Unisolate => "Unisolate",
            ActionType::StopAndQuarantineFile => "StopAndQuarantineFile",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Restrict and unrestrict share one "only one open at a time" slot per device.
    pub fn is_restrict_family(self) -> bool {
        matches!(
            self,
            ActionType::RestrictCodeExecution | ActionType::UnrestrictCodeExecution
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum ActionStatus {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    TimeOut,
    Cancelled,
}

impl ActionStatus {
    pub const ALL: [ActionStatus; 6] = [
        ActionStatus::Pending,
        ActionStatus::InProgress,
        ActionStatus::Succeeded,
        ActionStatus::Failed,
        ActionStatus::TimeOut,
        ActionStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Pending => "Pending",
            ActionStatus::InProgress => "InProgress",
            ActionStatus::Succeeded => "Succeeded",
            ActionStatus::Failed => "Failed",
            ActionStatus::TimeOut => "TimeOut",
            ActionStatus::Cancelled => "Cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn is_open(self) -> bool {
        matches!(self, ActionStatus::Pending | ActionStatus::InProgress)
    }

    pub fn is_final(self) -> bool {
        !self.is_open()
    }
}

/// A machine action, with keys in the order the real service sends them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineAction {
    /// Present on single-entity responses only.
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    pub id: String,
    #[serde(rename = "type")]
    pub action_type: ActionType,
    pub title: Option<String>,
    pub requestor: Option<String>,
    pub requestor_comment: Option<String>,
    pub status: ActionStatus,
    pub machine_id: Option<String>,
    pub computer_dns_name: Option<String>,
    pub creation_date_time_utc: Timestamp,
    pub last_update_date_time_utc: Timestamp,
    pub cancellation_requestor: Option<String>,
    pub cancellation_comment: Option<String>,
    pub cancellation_date_time_utc: Option<Timestamp>,
    pub error_h_result: i64,
    pub scope: Option<String>,
    pub external_id: Option<String>,
    pub request_source: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub related_file_info: Option<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub commands: Vec<serde_json::Value>,
    pub troubleshoot_info: Option<String>,
}
