//! The Machine entity.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    /// 40 lower-case hex characters.
    pub id: String,
    pub computer_dns_name: Option<String>,
    pub first_seen: Timestamp,
    pub last_seen: Option<Timestamp>,
    pub os_platform: Option<String>,
    /// The OS version.
    pub version: Option<String>,
    pub os_processor: Option<String>,
    pub last_ip_address: Option<String>,
    pub last_external_ip_address: Option<String>,
    pub agent_version: Option<String>,
    pub os_build: Option<i64>,
    pub health_status: String,
    pub device_value: Option<String>,
    pub rbac_group_id: i64,
    pub rbac_group_name: Option<String>,
    pub risk_score: Option<String>,
    pub exposure_level: Option<String>,
    pub is_aad_joined: bool,
    pub aad_device_id: Option<String>,
    pub machine_tags: Vec<String>,
    pub onboarding_status: String,
    pub os_architecture: Option<String>,
    pub ip_addresses: Vec<IpAddress>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    pub ip_address: String,
    pub mac_address: Option<String>,
    pub operational_status: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}
