//! The filterable properties of the two collections (spec §4).

use super::{Field, FieldType};

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
        }
    }

    fn field_type(self) -> FieldType {
        match self {
            MachineField::LastSeen | MachineField::FirstSeen => FieldType::Timestamp,
            MachineField::MachineTags => FieldType::StringCollection,
            MachineField::RbacGroupId => FieldType::Integer,
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
    }
}
