//! The filterable properties of the collections (spec §4; indicators as MDE's List
//! Indicators API; a machine's denial events, an appfence extension).

use super::{Field, FieldType};
use crate::indicators::{INDICATOR_ACTIONS, INDICATOR_TYPES, SEVERITIES};

const ACTION_STATUSES: &[&str] = &[
    "Pending",
    "InProgress",
    "Succeeded",
    "Failed",
    "TimeOut",
    "Cancelled",
];
const ACTION_TYPES: &[&str] = &[
    "RestrictCodeExecution",
    "UnrestrictCodeExecution",
    "RunAntiVirusScan",
    "Offboard",
    "LiveResponse",
    "CollectInvestigationPackage",
    "Isolate",
    "Unisolate",
    "StopAndQuarantineFile",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionField {
    Id,
    Status,
    MachineId,
    Type,
    Requestor,
    CreationDateTimeUtc,
    LastUpdateDateTimeUtc,
    ComputerDnsName,
    ExternalId,
}

impl Field for ActionField {
    const ENTITY: &'static str = "MachineAction";

    fn all() -> &'static [Self] {
        use ActionField::*;
        &[
            Id,
            Status,
            MachineId,
            Type,
            Requestor,
            CreationDateTimeUtc,
            LastUpdateDateTimeUtc,
            ComputerDnsName,
            ExternalId,
        ]
    }

    fn name(self) -> &'static str {
        match self {
            ActionField::Id => "id",
            ActionField::Status => "status",
            ActionField::MachineId => "machineId",
            ActionField::Type => "type",
            ActionField::Requestor => "requestor",
            ActionField::CreationDateTimeUtc => "creationDateTimeUtc",
            ActionField::LastUpdateDateTimeUtc => "lastUpdateDateTimeUtc",
            ActionField::ComputerDnsName => "computerDnsName",
            ActionField::ExternalId => "externalId",
        }
    }

    fn field_type(self) -> FieldType {
        match self {
            ActionField::Status => FieldType::Enum(ACTION_STATUSES),
            ActionField::Type => FieldType::Enum(ACTION_TYPES),
            ActionField::CreationDateTimeUtc | ActionField::LastUpdateDateTimeUtc => {
                FieldType::Timestamp
            }
            _ => FieldType::String,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MachineField {
    ComputerDnsName,
    Id,
    AadDeviceId,
    Version,
    HealthStatus,
    OsPlatform,
    OnboardingStatus,
    LastSeen,
    FirstSeen,
    MachineTags,
    RbacGroupId,
    LastIpAddress,
    RiskScore,
    ExposureLevel,
    DeviceValue,
    AgentVersion,
    /// Whether the agent reports the device restricted (1) or not (0). Not an MDE field:
    /// the parser never produces it (it is not in `all()`); the console filters on it.
    Restricted,
}

impl Field for MachineField {
    const ENTITY: &'static str = "Machine";

    fn all() -> &'static [Self] {
        use MachineField::*;
        &[
            ComputerDnsName,
            Id,
            AadDeviceId,
            Version,
            HealthStatus,
            OsPlatform,
            OnboardingStatus,
            LastSeen,
            FirstSeen,
            MachineTags,
            RbacGroupId,
            LastIpAddress,
            RiskScore,
            ExposureLevel,
            DeviceValue,
            AgentVersion,
        ]
    }

    fn name(self) -> &'static str {
        match self {
            MachineField::ComputerDnsName => "computerDnsName",
            MachineField::Id => "id",
            MachineField::AadDeviceId => "aadDeviceId",
            MachineField::Version => "version",
            MachineField::HealthStatus => "healthStatus",
            MachineField::OsPlatform => "osPlatform",
            MachineField::OnboardingStatus => "onboardingStatus",
            MachineField::LastSeen => "lastSeen",
            MachineField::FirstSeen => "firstSeen",
            MachineField::MachineTags => "machineTags",
            MachineField::RbacGroupId => "rbacGroupId",
            MachineField::LastIpAddress => "lastIpAddress",
            MachineField::RiskScore => "riskScore",
            MachineField::ExposureLevel => "exposureLevel",
            MachineField::DeviceValue => "deviceValue",
            MachineField::AgentVersion => "agentVersion",
            MachineField::Restricted => "restricted",
        }
    }

    fn field_type(self) -> FieldType {
        match self {
            MachineField::LastSeen | MachineField::FirstSeen => FieldType::Timestamp,
            MachineField::MachineTags => FieldType::StringCollection,
            MachineField::RbacGroupId | MachineField::Restricted => FieldType::Integer,
            _ => FieldType::String,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndicatorField {
    Id,
    IndicatorValue,
    IndicatorType,
    Action,
    Application,
    Title,
    Severity,
    CreatedBy,
    /// The submitter's display name (`source` on the entity).
    CreatedByDisplayName,
    CreationTimeDateTimeUtc,
    ExpirationTime,
    LastUpdateTime,
}

impl Field for IndicatorField {
    const ENTITY: &'static str = "Indicator";

    fn all() -> &'static [Self] {
        use IndicatorField::*;
        &[
            Id,
            IndicatorValue,
            IndicatorType,
            Action,
            Application,
            Title,
            Severity,
            CreatedBy,
            CreatedByDisplayName,
            CreationTimeDateTimeUtc,
            ExpirationTime,
            LastUpdateTime,
        ]
    }

    fn name(self) -> &'static str {
        match self {
            IndicatorField::Id => "id",
            IndicatorField::IndicatorValue => "indicatorValue",
            IndicatorField::IndicatorType => "indicatorType",
            IndicatorField::Action => "action",
            IndicatorField::Application => "application",
            IndicatorField::Title => "title",
            IndicatorField::Severity => "severity",
            IndicatorField::CreatedBy => "createdBy",
            IndicatorField::CreatedByDisplayName => "createdByDisplayName",
            IndicatorField::CreationTimeDateTimeUtc => "creationTimeDateTimeUtc",
            IndicatorField::ExpirationTime => "expirationTime",
            IndicatorField::LastUpdateTime => "lastUpdateTime",
        }
    }

    fn field_type(self) -> FieldType {
        match self {
            IndicatorField::IndicatorType => FieldType::Enum(INDICATOR_TYPES),
            IndicatorField::Action => FieldType::Enum(INDICATOR_ACTIONS),
            IndicatorField::Severity => FieldType::Enum(SEVERITIES),
            IndicatorField::CreationTimeDateTimeUtc
            | IndicatorField::ExpirationTime
            | IndicatorField::LastUpdateTime => FieldType::Timestamp,
            _ => FieldType::String,
        }
    }
}

const DENIAL_KINDS: &[&str] = &["exec", "elfOpen"];

/// The properties of a machine's denial events (`GET /api/machines/{id}/events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventField {
    Time,
    Path,
    Sha256,
    Pid,
    Uid,
    Parent,
    Kind,
    MachineId,
    ComputerDnsName,
}

impl Field for EventField {
    const ENTITY: &'static str = "MachineEvent";

    fn all() -> &'static [Self] {
        use EventField::*;
        &[
            Time,
            Path,
            Sha256,
            Pid,
            Uid,
            Parent,
            Kind,
            MachineId,
            ComputerDnsName,
        ]
    }

    fn name(self) -> &'static str {
        match self {
            EventField::Time => "time",
            EventField::Path => "path",
            EventField::Sha256 => "sha256",
            EventField::Pid => "pid",
            EventField::Uid => "uid",
            EventField::Parent => "parent",
            EventField::Kind => "kind",
            EventField::MachineId => "machineId",
            EventField::ComputerDnsName => "computerDnsName",
        }
    }

    fn field_type(self) -> FieldType {
        match self {
            EventField::Time => FieldType::Timestamp,
            EventField::Pid | EventField::Uid => FieldType::Integer,
            EventField::Kind => FieldType::Enum(DENIAL_KINDS),
            _ => FieldType::String,
        }
    }
}

// Keep the enum lists above in step with the wire enums.
#[cfg(test)]
mod tests {
    use super::*;
    use appfence_proto::{ActionStatus, ActionType};

    #[test]
    fn enum_lists_match_wire_enums() {
        let s: Vec<&str> = ActionStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(s, ACTION_STATUSES);
        let t: Vec<&str> = ActionType::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(t, ACTION_TYPES);
        assert_eq!(
            ActionField::lookup("CREATIONDATETIMEUTC"),
            Some(ActionField::CreationDateTimeUtc)
        );
        assert_eq!(MachineField::lookup("nope"), None);
        let kinds: Vec<String> = [
            appfence_proto::agent::DenialKind::Exec,
            appfence_proto::agent::DenialKind::ElfOpen,
        ]
        .iter()
        .map(|k| {
            serde_json::to_value(k)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
        assert_eq!(kinds, DENIAL_KINDS);
        assert_eq!(
            IndicatorField::lookup("CreatedBy"),
            Some(IndicatorField::CreatedBy)
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertField {
    Id,
    AlertCreationTime,
    LastUpdateTime,
    LastEventTime,
    FirstEventTime,
    ResolvedTime,
    Status,
    Severity,
    MachineId,
    ComputerDnsName,
    Category,
    DetectionSource,
    DetectorId,
    AssignedTo,
    Classification,
    Determination,
    Title,
    IncidentId,
    InvestigationId,
}

impl Field for AlertField {
    const ENTITY: &'static str = "Alert";

    fn all() -> &'static [Self] {
        use AlertField::*;
        &[
            Id,
            AlertCreationTime,
            LastUpdateTime,
            LastEventTime,
            FirstEventTime,
            ResolvedTime,
            Status,
            Severity,
            MachineId,
            ComputerDnsName,
            Category,
            DetectionSource,
            DetectorId,
            AssignedTo,
            Classification,
            Determination,
            Title,
            IncidentId,
            InvestigationId,
        ]
    }

    fn name(self) -> &'static str {
        match self {
            AlertField::Id => "id",
            AlertField::AlertCreationTime => "alertCreationTime",
            AlertField::LastUpdateTime => "lastUpdateTime",
            AlertField::LastEventTime => "lastEventTime",
            AlertField::FirstEventTime => "firstEventTime",
            AlertField::ResolvedTime => "resolvedTime",
            AlertField::Status => "status",
            AlertField::Severity => "severity",
            AlertField::MachineId => "machineId",
            AlertField::ComputerDnsName => "computerDnsName",
            AlertField::Category => "category",
            AlertField::DetectionSource => "detectionSource",
            AlertField::DetectorId => "detectorId",
            AlertField::AssignedTo => "assignedTo",
            AlertField::Classification => "classification",
            AlertField::Determination => "determination",
            AlertField::Title => "title",
            AlertField::IncidentId => "incidentId",
            AlertField::InvestigationId => "investigationId",
        }
    }

    fn field_type(self) -> FieldType {
        use crate::alerts::{CLASSIFICATIONS, DETERMINATIONS, SEVERITIES, STATUSES};
        match self {
            AlertField::AlertCreationTime
            | AlertField::LastUpdateTime
            | AlertField::LastEventTime
            | AlertField::FirstEventTime
            | AlertField::ResolvedTime => FieldType::Timestamp,
            AlertField::Status => FieldType::Enum(STATUSES),
            AlertField::Severity => FieldType::Enum(SEVERITIES),
            AlertField::Classification => FieldType::Enum(CLASSIFICATIONS),
            AlertField::Determination => FieldType::Enum(DETERMINATIONS),
            AlertField::IncidentId | AlertField::InvestigationId => FieldType::Integer,
            _ => FieldType::String,
        }
    }

    fn expandable() -> &'static [&'static str] {
        &["evidence"]
    }
}
