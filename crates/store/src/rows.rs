//! Decoding rows into records, once for both engines: each engine's row type answers
//! [`RowGet`], and every decoder is written against it. Timestamps are 100-ns ticks;
//! JSON columns (string lists and the small agent-reported structs) come as text (the
//! PostgreSQL store selects its JSONB columns `::text`).

use appfence_core::alerts::AlertRecord;
use appfence_core::audit::AuditEvent;
use appfence_core::records::{
    ActionRecord, AppRegistration, AppSecret, AuditRecord, ConsoleSession, DenialRecord,
    EnrollSecret, IndicatorRecord, MachineRecord, SigningKey, Tenant, UserRecord,
};
use appfence_core::sign_in_throttle::ThrottleRecord;
use appfence_core::{Error, Result};
use appfence_proto::agent::{DenialEvent, DenialKind, RuleOutcome};
use appfence_proto::{ActionStatus, ActionType, Timestamp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::Row;

/// The column values the decoders need, from either engine's rows.
pub(crate) trait RowGet {
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn boolean(&self, column: &str) -> Result<bool>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>>;
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>>;
}

fn decode_err(column: &str, e: sqlx::Error) -> Error {
    Error::Internal(format!(
        "cannot decode column {column} of a stored row: {e}"
    ))
}

macro_rules! row_get {
    ($row:ty) => {
        impl RowGet for $row {
            fn text(&self, c: &str) -> Result<String> {
                self.try_get(c).map_err(|e| decode_err(c, e))
            }
            fn opt_text(&self, c: &str) -> Result<Option<String>> {
                self.try_get(c).map_err(|e| decode_err(c, e))
            }
            fn int(&self, c: &str) -> Result<i64> {
                self.try_get(c).map_err(|e| decode_err(c, e))
            }
            fn opt_int(&self, c: &str) -> Result<Option<i64>> {
                self.try_get(c).map_err(|e| decode_err(c, e))
            }
            fn boolean(&self, c: &str) -> Result<bool> {
                self.try_get(c).map_err(|e| decode_err(c, e))
            }
            fn bytes(&self, c: &str) -> Result<Vec<u8>> {
                self.try_get(c).map_err(|e| decode_err(c, e))
            }
            fn opt_bytes(&self, c: &str) -> Result<Option<Vec<u8>>> {
                self.try_get(c).map_err(|e| decode_err(c, e))
            }
        }
    };
}

row_get!(sqlx::sqlite::SqliteRow);
row_get!(sqlx::postgres::PgRow);

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("cannot encode JSON: {e}")))
}

fn json<T: DeserializeOwned>(row: &impl RowGet, column: &str) -> Result<T> {
    let text = row.text(column)?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Internal(format!("bad JSON in column {column}: {e}")))
}

fn timestamp(row: &impl RowGet, column: &str) -> Result<Timestamp> {
    row.int(column).map(Timestamp::from_ticks)
}

fn opt_timestamp(row: &impl RowGet, column: &str) -> Result<Option<Timestamp>> {
    Ok(row.opt_int(column)?.map(Timestamp::from_ticks))
}

fn status(raw: &str) -> Result<ActionStatus> {
    ActionStatus::parse(raw)
        .ok_or_else(|| Error::Internal(format!("unknown action status {raw:?} in the store")))
}

fn unsigned(row: &impl RowGet, column: &str) -> Result<Option<u32>> {
    row.opt_int(column)?
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| Error::Internal(format!("{column} {v} out of range in the store")))
        })
        .transpose()
}

fn count(row: &impl RowGet, column: &str) -> Result<u32> {
    Ok(row.int(column)?.clamp(0, i64::from(u32::MAX)) as u32)
}

pub(crate) fn tenant<R: RowGet>(row: &R) -> Result<Tenant> {
    Ok(Tenant {
        id: row.text("id")?,
        name: row.text("name")?,
    })
}

pub(crate) fn app<R: RowGet>(row: &R) -> Result<AppRegistration> {
    Ok(AppRegistration {
        tenant_id: row.text("tenant_id")?,
        client_id: row.text("client_id")?,
        display_name: row.text("display_name")?,
        roles: json(row, "roles")?,
        created: timestamp(row, "created")?,
        disabled: opt_timestamp(row, "disabled")?,
    })
}

pub(crate) fn app_secret<R: RowGet>(row: &R) -> Result<AppSecret> {
    Ok(AppSecret {
        id: row.text("id")?,
        tenant_id: row.text("tenant_id")?,
        client_id: row.text("client_id")?,
        secret_hash: row.text("secret_hash")?,
        hint: row.opt_text("hint")?,
        created: timestamp(row, "created")?,
        expires: opt_timestamp(row, "expires")?,
    })
}

pub(crate) fn enroll_secret<R: RowGet>(row: &R) -> Result<EnrollSecret> {
    Ok(EnrollSecret {
        id: row.text("id")?,
        tenant_id: row.text("tenant_id")?,
        secret_sha256: row.text("secret_sha256")?,
        created: timestamp(row, "created")?,
        expires: opt_timestamp(row, "expires")?,
        max_uses: unsigned(row, "max_uses")?,
        uses: count(row, "uses")?,
        revoked: opt_timestamp(row, "revoked")?,
    })
}

pub(crate) fn user<R: RowGet>(row: &R) -> Result<UserRecord> {
    Ok(UserRecord {
        tenant_id: row.text("tenant_id")?,
        object_id: row.text("object_id")?,
        upn: row.text("upn")?,
        password_hash: row.text("password_hash")?,
        groups: json(row, "groups")?,
        created: timestamp(row, "created")?,
        disabled: opt_timestamp(row, "disabled")?,
    })
}

pub(crate) fn console_session<R: RowGet>(row: &R) -> Result<ConsoleSession> {
    Ok(ConsoleSession {
        id_sha256: row.text("id_sha256")?,
        tenant_id: row.text("tenant_id")?,
        user_object_id: row.text("user_object_id")?,
        upn: row.text("upn")?,
        groups: json(row, "groups")?,
        issuer: row.text("issuer")?,
        created: timestamp(row, "created")?,
        last_seen: timestamp(row, "last_seen")?,
        expires: timestamp(row, "expires")?,
    })
}

pub(crate) fn signing_key<R: RowGet>(row: &R) -> Result<SigningKey> {
    Ok(SigningKey {
        kid: row.text("kid")?,
        algorithm: row.text("algorithm")?,
        public_key: row.bytes("public_key")?,
        sealed_private_key: row.opt_bytes("sealed_private_key")?,
        kek_id: row.opt_text("kek_id")?,
        created: timestamp(row, "created")?,
        activates: timestamp(row, "activates")?,
        verify_until: opt_timestamp(row, "verify_until")?,
        retired: opt_timestamp(row, "retired")?,
    })
}

pub(crate) fn action<R: RowGet>(row: &R) -> Result<ActionRecord> {
    let action_type = row.text("action_type")?;
    Ok(ActionRecord {
        tenant_id: row.text("tenant_id")?,
        id: row.text("id")?,
        action_type: ActionType::parse(&action_type).ok_or_else(|| {
            Error::Internal(format!("unknown action type {action_type:?} in the store"))
        })?,
        title: row.opt_text("title")?,
        requestor: row.text("requestor")?,
        requestor_comment: row.text("requestor_comment")?,
        status: status(&row.text("status")?)?,
        machine_id: row.text("machine_id")?,
        computer_dns_name: row.text("computer_dns_name")?,
        created: timestamp(row, "created")?,
        last_update: timestamp(row, "last_update")?,
        cancellation_requestor: row.opt_text("cancellation_requestor")?,
        cancellation_comment: row.opt_text("cancellation_comment")?,
        cancellation_time: opt_timestamp(row, "cancellation_time")?,
        error_h_result: row.int("error_h_result")?,
        external_id: row.opt_text("external_id")?,
        request_source: row.text("request_source")?,
        troubleshoot_info: row.opt_text("troubleshoot_info")?,
    })
}

pub(crate) fn machine<R: RowGet>(row: &R) -> Result<MachineRecord> {
    Ok(MachineRecord {
        tenant_id: row.text("tenant_id")?,
        id: row.text("id")?,
        aad_device_id: row.text("aad_device_id")?,
        computer_dns_name: row.text("computer_dns_name")?,
        first_seen: timestamp(row, "first_seen")?,
        last_seen: opt_timestamp(row, "last_seen")?,
        os_platform: row.text("os_platform")?,
        os_version: row.text("os_version")?,
        kernel_version: row.text("kernel_version")?,
        os_architecture: row.text("os_architecture")?,
        agent_version: row.text("agent_version")?,
        last_ip_address: row.opt_text("last_ip_address")?,
        ip_addresses: json(row, "ip_addresses")?,
        health_status: row.text("health_status")?,
        onboarding_status: row.text("onboarding_status")?,
        machine_tags: json(row, "machine_tags")?,
        rbac_group_id: row.int("rbac_group_id")?,
        rbac_group_name: row.opt_text("rbac_group_name")?,
        risk_score: row.text("risk_score")?,
        exposure_level: row.text("exposure_level")?,
        device_value: row.text("device_value")?,
        capabilities: json(row, "capabilities")?,
        enforcement: json(row, "enforcement")?,
        credential_sha256: row.text("credential_sha256")?,
        enrollment_key_sha256: row.opt_text("enrollment_key_sha256")?,
        offboarded: opt_timestamp(row, "offboarded")?,
    })
}

pub(crate) fn audit<R: RowGet>(row: &R) -> Result<AuditRecord> {
    let from = row.opt_text("from_status")?;
    Ok(AuditRecord {
        action_id: row.text("action_id")?,
        at: timestamp(row, "at")?,
        actor: row.text("actor")?,
        from: from.as_deref().map(status).transpose()?,
        to: status(&row.text("to_status")?)?,
        reason: row.opt_text("reason")?,
    })
}

pub(crate) fn indicator<R: RowGet>(row: &R) -> Result<IndicatorRecord> {
    Ok(IndicatorRecord {
        tenant_id: row.text("tenant_id")?,
        id: row.int("id")?,
        indicator_value: row.text("indicator_value")?,
        indicator_type: row.text("indicator_type")?,
        action: row.text("action")?,
        application: row.opt_text("application")?,
        source: row.text("source")?,
        source_type: row.text("source_type")?,
        created_by: row.text("created_by")?,
        title: row.text("title")?,
        description: row.text("description")?,
        recommended_actions: row.opt_text("recommended_actions")?,
        severity: row.text("severity")?,
        expiration_time: opt_timestamp(row, "expiration_time")?,
        generate_alert: row.boolean("generate_alert")?,
        created: timestamp(row, "created")?,
        last_update: timestamp(row, "last_update")?,
        last_updated_by: row.opt_text("last_updated_by")?,
        rbac_group_names: json(row, "rbac_group_names")?,
        rbac_group_ids: json(row, "rbac_group_ids")?,
    })
}

/// How a rule outcome is stored.
pub(crate) fn rule_name(rule: Option<RuleOutcome>) -> Option<&'static str> {
    rule.map(|r| match r {
        RuleOutcome::Blocked => "blocked",
        RuleOutcome::Audited => "audited",
    })
}

pub(crate) fn denial<R: RowGet>(row: &R) -> Result<DenialRecord> {
    let kind = row.text("kind")?;
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
        machine_id: row.text("machine_id")?,
        computer_dns_name: row.text("computer_dns_name")?,
        event: DenialEvent {
            time: timestamp(row, "time")?,
            path: row.text("path")?,
            sha256: row.opt_text("sha256")?,
            pid: unsigned(row, "pid")?.unwrap_or_default(),
            uid: unsigned(row, "uid")?,
            parent: row.opt_text("parent")?,
            kind,
            monitor: row.boolean("monitor")?,
            rule: match row.opt_text("rule")?.as_deref() {
                None => None,
                Some("blocked") => Some(RuleOutcome::Blocked),
                Some("audited") => Some(RuleOutcome::Audited),
                Some(other) => {
                    return Err(Error::Internal(format!(
                        "unknown rule {other:?} of a denial event in the store"
                    )))
                }
            },
            indicator_id: row.opt_text("indicator_id")?,
            alert: row.boolean("alert")?,
            // Kept in the alerts' evidence, not with every event.
            command_line: None,
            user: None,
        },
    })
}

pub(crate) fn throttle<R: RowGet>(row: &R) -> Result<ThrottleRecord> {
    Ok(ThrottleRecord {
        key: row.text("key")?,
        failures: count(row, "failures")?,
        window_start: timestamp(row, "window_start")?,
        locked_until: opt_timestamp(row, "locked_until")?,
        lockouts: count(row, "lockouts")?,
        lock_end_recorded: row.boolean("lock_end_recorded")?,
    })
}

/// `(seq, event)` of the audit log.
pub(crate) fn audit_event<R: RowGet>(row: &R) -> Result<(i64, AuditEvent)> {
    Ok((
        row.int("seq")?,
        AuditEvent {
            at: timestamp(row, "at")?,
            tenant_id: row.opt_text("tenant_id")?,
            event: row.text("event")?,
            subject: row.text("subject")?,
            actor: row.text("actor")?,
            detail: row.opt_text("detail")?,
        },
    ))
}

/// The name of a denial kind as stored.
pub(crate) fn kind_name(kind: DenialKind) -> &'static str {
    match kind {
        DenialKind::Exec => "exec",
        DenialKind::ElfOpen => "elfOpen",
    }
}

pub(crate) const ACTION_COLUMNS: &str = "id, tenant_id, action_type, title, requestor, \
     requestor_comment, status, machine_id, computer_dns_name, created, last_update, \
     cancellation_requestor, cancellation_comment, cancellation_time, error_h_result, \
     external_id, request_source, troubleshoot_info";

pub(crate) const INDICATOR_COLUMNS: &str = "id, tenant_id, indicator_value, indicator_type, \
     action, application, source, source_type, created_by, title, description, \
     recommended_actions, severity, expiration_time, generate_alert, created, last_update, \
     last_updated_by, rbac_group_names, rbac_group_ids";

/// Columns of the `machine_events` view.
pub(crate) const EVENT_COLUMNS: &str = "machine_id, computer_dns_name, time, path, sha256, \
     pid, uid, parent, kind, monitor, rule, indicator_id, alert";

pub(crate) const AUDIT_COLUMNS: &str = "action_id, at, actor, from_status, to_status, reason";

pub(crate) const SIGNING_KEY_COLUMNS: &str = "kid, algorithm, public_key, sealed_private_key, \
     kek_id, created, activates, verify_until, retired";

pub(crate) const THROTTLE_COLUMNS: &str =
    "key, failures, window_start, locked_until, lockouts, lock_end_recorded";

/// Columns of the `alert_rows` view.
pub(crate) const ALERT_COLUMNS: &str = concat!(
    "id, tenant_id, machine_id, computer_dns_name, rbac_group_id, rbac_group_name, ",
    "detector_id, title, description, category, severity, detection_source, threat_name, ",
    "mitre_techniques, status, classification, determination, assigned_to, created, ",
    "first_event, last_event, last_update, resolved, event_count, related_user, comments, ",
    "evidence"
);

/// [`ALERT_COLUMNS`] with an empty evidence list.
pub(crate) const ALERT_COLUMNS_NO_EVIDENCE: &str = concat!(
    "id, tenant_id, machine_id, computer_dns_name, rbac_group_id, rbac_group_name, ",
    "detector_id, title, description, category, severity, detection_source, threat_name, ",
    "mitre_techniques, status, classification, determination, assigned_to, created, ",
    "first_event, last_event, last_update, resolved, event_count, related_user, comments, ",
    "'[]' AS evidence"
);

pub(crate) fn alert<R: RowGet>(row: &R) -> Result<AlertRecord> {
    Ok(AlertRecord {
        tenant_id: row.text("tenant_id")?,
        id: row.text("id")?,
        machine_id: row.text("machine_id")?,
        computer_dns_name: row.opt_text("computer_dns_name")?,
        rbac_group_id: row.int("rbac_group_id")?,
        rbac_group_name: row.opt_text("rbac_group_name")?,
        detector_id: row.text("detector_id")?,
        title: row.text("title")?,
        description: row.text("description")?,
        category: row.text("category")?,
        severity: row.text("severity")?,
        detection_source: row.text("detection_source")?,
        threat_name: row.opt_text("threat_name")?,
        mitre_techniques: json(row, "mitre_techniques")?,
        status: row.text("status")?,
        classification: row.opt_text("classification")?,
        determination: row.opt_text("determination")?,
        assigned_to: row.opt_text("assigned_to")?,
        created: timestamp(row, "created")?,
        first_event: timestamp(row, "first_event")?,
        last_event: timestamp(row, "last_event")?,
        last_update: timestamp(row, "last_update")?,
        resolved: opt_timestamp(row, "resolved")?,
        event_count: row.int("event_count")?,
        related_user: match row.opt_text("related_user")? {
            None => None,
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|e| {
                    Error::Internal(format!("bad JSON in column related_user: {e}"))
                })?)
            }
        },
        comments: json(row, "comments")?,
        evidence: json(row, "evidence")?,
    })
}
