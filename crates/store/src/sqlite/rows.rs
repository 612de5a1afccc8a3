//! Column lists and the decoding of rows into records. JSON columns hold string lists
//! and the small agent-reported structs; timestamps are 100-ns ticks.

use appfence_core::records::{
    ActionRecord, AuditRecord, DenialRecord, IndicatorRecord, MachineRecord, UserRecord,
};
use appfence_core::{Error, Result};
use appfence_proto::agent::{DenialEvent, DenialKind};
use appfence_proto::{ActionStatus, ActionType, Timestamp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

pub(super) const ACTION_COLUMNS: &str = "id, tenant_id, action_type, title, requestor, \
     requestor_comment, status, machine_id, computer_dns_name, created, last_update, \
     cancellation_requestor, cancellation_comment, cancellation_time, error_h_result, \
     external_id, request_source, troubleshoot_info";

pub(super) const MACHINE_COLUMNS: &str = "id, tenant_id, aad_device_id, computer_dns_name, \
     first_seen, last_seen, os_platform, os_version, kernel_version, os_architecture, \
     agent_version, last_ip_address, ip_addresses, health_status, onboarding_status, \
     machine_tags, rbac_group_id, rbac_group_name, risk_score, exposure_level, device_value, \
     capabilities, enforcement, credential_sha256, enrollment_key_sha256";

pub(super) const INDICATOR_COLUMNS: &str = "id, tenant_id, indicator_value, indicator_type, \
     action, application, source, source_type, created_by, title, description, \
     recommended_actions, severity, expiration_time, generate_alert, created, last_update, \
     last_updated_by";

/// Columns of the `machine_events` view.
pub(super) const EVENT_COLUMNS: &str = "machine_id, computer_dns_name, time, path, sha256, pid, \
     uid, parent, kind, monitor";

pub(super) const AUDIT_COLUMNS: &str = "action_id, at, actor, from_status, to_status, reason";

fn decode_err(e: sqlx::Error) -> Error {
    Error::Internal(format!("cannot decode a stored row: {e}"))
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(decode_err)
}

fn timestamp(row: &SqliteRow, column: &str) -> Result<Timestamp> {
    get::<i64>(row, column).map(Timestamp::from_ticks)
}

fn opt_timestamp(row: &SqliteRow, column: &str) -> Result<Option<Timestamp>> {
    Ok(get::<Option<i64>>(row, column)?.map(Timestamp::from_ticks))
}

fn status(raw: &str) -> Result<ActionStatus> {
    ActionStatus::parse(raw)
        .ok_or_else(|| Error::Internal(format!("unknown action status {raw:?} in the store")))
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("cannot encode JSON: {e}")))
}

fn json<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T> {
    let text: String = get(row, column)?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Internal(format!("bad JSON in column {column}: {e}")))
}

pub(super) fn action(row: &SqliteRow) -> Result<ActionRecord> {
    let action_type: String = get(row, "action_type")?;
    Ok(ActionRecord {
        tenant_id: get(row, "tenant_id")?,
        id: get(row, "id")?,
        action_type: ActionType::parse(&action_type).ok_or_else(|| {
            Error::Internal(format!("unknown action type {action_type:?} in the store"))
        })?,
        title: get(row, "title")?,
        requestor: get(row, "requestor")?,
        requestor_comment: get(row, "requestor_comment")?,
        status: status(&get::<String>(row, "status")?)?,
        machine_id: get(row, "machine_id")?,
        computer_dns_name: get(row, "computer_dns_name")?,
        created: timestamp(row, "created")?,
        last_update: timestamp(row, "last_update")?,
        cancellation_requestor: get(row, "cancellation_requestor")?,
        cancellation_comment: get(row, "cancellation_comment")?,
        cancellation_time: opt_timestamp(row, "cancellation_time")?,
        error_h_result: get(row, "error_h_result")?,
        external_id: get(row, "external_id")?,
        request_source: get(row, "request_source")?,
        troubleshoot_info: get(row, "troubleshoot_info")?,
    })
}

pub(super) fn machine(row: &SqliteRow) -> Result<MachineRecord> {
    Ok(MachineRecord {
        tenant_id: get(row, "tenant_id")?,
        id: get(row, "id")?,
        aad_device_id: get(row, "aad_device_id")?,
        computer_dns_name: get(row, "computer_dns_name")?,
        first_seen: timestamp(row, "first_seen")?,
        last_seen: opt_timestamp(row, "last_seen")?,
        os_platform: get(row, "os_platform")?,
        os_version: get(row, "os_version")?,
        kernel_version: get(row, "kernel_version")?,
        os_architecture: get(row, "os_architecture")?,
        agent_version: get(row, "agent_version")?,
        last_ip_address: get(row, "last_ip_address")?,
        ip_addresses: json(row, "ip_addresses")?,
        health_status: get(row, "health_status")?,
        onboarding_status: get(row, "onboarding_status")?,
        machine_tags: json(row, "machine_tags")?,
        rbac_group_id: get(row, "rbac_group_id")?,
        rbac_group_name: get(row, "rbac_group_name")?,
        risk_score: get(row, "risk_score")?,
        exposure_level: get(row, "exposure_level")?,
        device_value: get(row, "device_value")?,
        capabilities: json(row, "capabilities")?,
        enforcement: json(row, "enforcement")?,
        credential_sha256: get(row, "credential_sha256")?,
        enrollment_key_sha256: get(row, "enrollment_key_sha256")?,
    })
}

pub(super) fn audit(row: &SqliteRow) -> Result<AuditRecord> {
    let from: Option<String> = get(row, "from_status")?;
    Ok(AuditRecord {
        action_id: get(row, "action_id")?,
        at: timestamp(row, "at")?,
        actor: get(row, "actor")?,
        from: from.as_deref().map(status).transpose()?,
        to: status(&get::<String>(row, "to_status")?)?,
        reason: get(row, "reason")?,
    })
}

pub(super) fn roles(row: &SqliteRow) -> Result<Vec<String>> {
    json(row, "roles")
}

pub(super) fn user(row: &SqliteRow) -> Result<UserRecord> {
    Ok(UserRecord {
        tenant_id: get(row, "tenant_id")?,
        object_id: get(row, "object_id")?,
        upn: get(row, "upn")?,
        password_hash: get(row, "password_hash")?,
        groups: json(row, "groups")?,
        created: timestamp(row, "created")?,
    })
}

pub(super) fn indicator(row: &SqliteRow) -> Result<IndicatorRecord> {
    Ok(IndicatorRecord {
        tenant_id: get(row, "tenant_id")?,
        id: get(row, "id")?,
        indicator_value: get(row, "indicator_value")?,
        indicator_type: get(row, "indicator_type")?,
        action: get(row, "action")?,
        application: get(row, "application")?,
        source: get(row, "source")?,
        source_type: get(row, "source_type")?,
        created_by: get(row, "created_by")?,
        title: get(row, "title")?,
        description: get(row, "description")?,
        recommended_actions: get(row, "recommended_actions")?,
        severity: get(row, "severity")?,
        expiration_time: opt_timestamp(row, "expiration_time")?,
        generate_alert: get(row, "generate_alert")?,
        created: timestamp(row, "created")?,
        last_update: timestamp(row, "last_update")?,
        last_updated_by: get(row, "last_updated_by")?,
    })
}

fn unsigned(row: &SqliteRow, column: &str) -> Result<Option<u32>> {
    get::<Option<i64>>(row, column)?
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| Error::Internal(format!("{column} {v} out of range in the store")))
        })
        .transpose()
}

pub(super) fn denial(row: &SqliteRow) -> Result<DenialRecord> {
    let kind: String = get(row, "kind")?;
    let kind = match kind.as_str() {
        "exec" => DenialKind::Exec,
        "elfOpen" => DenialKind::ElfOpen,
        other => {
            return Err(Error::Internal(format!(
                "unknown denial kind {other:?} in the store"
            )))
        }
    };
    Ok(DenialRecord {
        machine_id: get(row, "machine_id")?,
        computer_dns_name: get(row, "computer_dns_name")?,
        event: DenialEvent {
            time: timestamp(row, "time")?,
            path: get(row, "path")?,
            sha256: get(row, "sha256")?,
            pid: unsigned(row, "pid")?.unwrap_or_default(),
            uid: unsigned(row, "uid")?,
            parent: get(row, "parent")?,
            kind,
            monitor: get(row, "monitor")?,
        },
    })
}
