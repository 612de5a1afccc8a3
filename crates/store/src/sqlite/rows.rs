//! SQLite's column lists; decoding rows into records is shared with PostgreSQL
//! (`crate::rows`).

pub(super) use crate::rows::{
    action, audit, denial, indicator, machine, to_json, user, ACTION_COLUMNS, AUDIT_COLUMNS,
    EVENT_COLUMNS, INDICATOR_COLUMNS,
};

pub(super) const MACHINE_COLUMNS: &str = "id, tenant_id, aad_device_id, computer_dns_name, \
     first_seen, last_seen, os_platform, os_version, kernel_version, os_architecture, \
     agent_version, last_ip_address, ip_addresses, health_status, onboarding_status, \
     machine_tags, rbac_group_id, rbac_group_name, risk_score, exposure_level, device_value, \
     capabilities, enforcement, credential_sha256, enrollment_key_sha256, offboarded";
