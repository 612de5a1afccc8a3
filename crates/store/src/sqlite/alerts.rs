//! Alerts: raised and grouped in the writer's transactions (with the denial events that
//! caused them), listed with OData, changed by analysts, pruned by retention.

use appfence_core::alerts::detectors::next_creation_time;
use appfence_core::alerts::{AlertCandidate, AlertChange, AlertRecord, Detector};
use appfence_core::odata::{AlertField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::MachineRecord;
use appfence_core::{Error, Result};
use appfence_proto::Timestamp;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Row;

use super::list::{self, Collection};
use super::rows::MACHINE_COLUMNS;
use super::{audit_log, commit, db_err, write_tx};
use crate::alert_columns;
use crate::rows::{self, to_json, ALERT_COLUMNS, ALERT_COLUMNS_NO_EVIDENCE};

const WHAT: &str = "alerts";

const fn collection(columns: &'static str) -> Collection<AlertField> {
    Collection {
        table: "alert_rows",
        columns,
        column: alert_columns::column,
        default_order: alert_columns::DEFAULT_ORDER,
        default_keys: alert_columns::DEFAULT_KEYS,
        tiebreak_key: alert_columns::TIEBREAK_KEY,
        nullable: alert_columns::NULLABLE,
        implied: &[],
        what: WHAT,
        device_group: "rbac_group_id",
    }
}

const WITH_EVIDENCE: Collection<AlertField> = collection(ALERT_COLUMNS);
const WITHOUT_EVIDENCE: Collection<AlertField> = collection(ALERT_COLUMNS_NO_EVIDENCE);

/// Raises or folds each candidate inside the caller's write transaction; returns how
/// many new alerts were created. The single writer serialises this, so `created`
/// (max(now, the tenant's newest + 1 tick)) grows in commit order.
pub(super) async fn raise_in(
    conn: &mut SqliteConnection,
    tenant_id: &str,
    candidates: &[AlertCandidate],
    now: Timestamp,
) -> Result<usize> {
    let mut created = 0;
    // `Some(newest)` once read (`Some(None)`: the tenant has no alert yet).
    let mut newest: Option<Option<Timestamp>> = None;
    for c in candidates {
        let existing = match c.join_since {
            Some(since) => sqlx::query(
                "SELECT seq, first_event, last_event FROM alerts \
                 WHERE machine_id = ? AND detector_id = ? AND group_key = ? \
                   AND status <> 'Resolved' AND last_event >= ? \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(&c.machine_id)
            .bind(c.detector.id())
            .bind(&c.group_key)
            .bind(since.ticks()),
            None => sqlx::query(
                "SELECT seq, first_event, last_event FROM alerts \
                 WHERE machine_id = ? AND detector_id = ? AND group_key = ? \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(&c.machine_id)
            .bind(c.detector.id())
            .bind(&c.group_key),
        }
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err("cannot look up an alert to group with"))?;
        if let Some(row) = existing {
            let seq: i64 = row.get("seq");
            let first: i64 = row.get("first_event");
            let last: i64 = row.get("last_event");
            let stored = (Timestamp::from_ticks(first), Timestamp::from_ticks(last));
            if let Some(added) = c.fold_into(stored.0, stored.1) {
                sqlx::query(
                    "UPDATE alerts SET first_event = MIN(first_event, ?), \
                         last_event = MAX(last_event, ?), event_count = event_count + ?, \
                         last_update = ? WHERE seq = ?",
                )
                .bind(c.first_event.ticks())
                .bind(c.last_event.ticks())
                .bind(added)
                .bind(now.ticks())
                .bind(seq)
                .execute(&mut *conn)
                .await
                .map_err(db_err("cannot update an alert"))?;
            }
            continue;
        }
        // The tenant's newest creation time, read once per transaction.
        let known = match newest {
            Some(n) => n,
            None => sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(created) FROM alerts WHERE tenant_id = ?",
            )
            .bind(tenant_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err("cannot read the newest alert"))?
            .map(Timestamp::from_ticks),
        };
        let at = next_creation_time(now, known);
        newest = Some(Some(at));
        insert(conn, tenant_id, c, at, now).await?;
        created += 1;
    }
    Ok(created)
}

async fn insert(
    conn: &mut SqliteConnection,
    tenant_id: &str,
    c: &AlertCandidate,
    created: Timestamp,
    now: Timestamp,
) -> Result<()> {
    let mitre: Vec<&str> = c.detector.mitre_techniques().to_vec();
    sqlx::query(
        "INSERT INTO alerts (id, tenant_id, machine_id, detector_id, group_key, title, \
             description, category, severity, detection_source, threat_name, \
             mitre_techniques, status, created, first_event, last_event, last_update, \
             event_count, related_user, comments, evidence) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'New', ?, ?, ?, ?, ?, ?, '[]', ?)",
    )
    .bind(appfence_core::alerts::new_alert_id(created))
    .bind(tenant_id)
    .bind(&c.machine_id)
    .bind(c.detector.id())
    .bind(&c.group_key)
    .bind(&c.title)
    .bind(&c.description)
    .bind(c.detector.category())
    .bind(&c.severity)
    .bind(c.detector.detection_source())
    .bind(&c.threat_name)
    .bind(to_json(&mitre)?)
    .bind(created.ticks())
    .bind(c.first_event.ticks())
    .bind(c.last_event.ticks())
    .bind(now.ticks())
    .bind(c.count)
    .bind(c.related_user.as_ref().map(to_json).transpose()?)
    .bind(to_json(&c.evidence)?)
    .execute(&mut *conn)
    .await
    .map_err(db_err("cannot store an alert"))?;
    Ok(())
}

pub(super) async fn raise(
    writer: &SqlitePool,
    tenant_id: &str,
    candidates: &[AlertCandidate],
    now: Timestamp,
) -> Result<usize> {
    if candidates.is_empty() {
        return Ok(0);
    }
    let mut tx = write_tx(writer).await?;
    let created = raise_in(&mut tx, tenant_id, candidates, now).await?;
    commit(tx).await?;
    Ok(created)
}

pub(super) async fn list(
    reader: &SqlitePool,
    tenant_id: &str,
    scope: &DeviceScope,
    query: &Query<AlertField>,
) -> Result<Page<AlertRecord>> {
    let c = if query.expands("evidence") {
        &WITH_EVIDENCE
    } else {
        &WITHOUT_EVIDENCE
    };
    list::page(reader, c, tenant_id, scope, query, rows::alert).await
}

async fn read_one(
    conn: &mut SqliteConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<AlertRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {ALERT_COLUMNS} FROM alert_rows WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err("cannot read an alert"))?;
    row.as_ref().map(rows::alert).transpose()
}

pub(super) async fn get(
    reader: &SqlitePool,
    tenant_id: &str,
    id: &str,
    scope: &DeviceScope,
) -> Result<Option<AlertRecord>> {
    let mut conn = reader
        .acquire()
        .await
        .map_err(db_err("cannot read an alert"))?;
    Ok(read_one(&mut conn, tenant_id, id)
        .await?
        .filter(|a| scope.allows(a.rbac_group_id)))
}

/// Applies `change` to every alert in `ids`, all or nothing: an id that does not exist
/// in the tenant or lies outside `scope` is `ResourceNotFound` and nothing changes. Each
/// change is in the audit log with its actor, in the same transaction.
pub(super) async fn update(
    writer: &SqlitePool,
    tenant_id: &str,
    ids: &[String],
    change: &AlertChange,
    scope: &DeviceScope,
    actor: &str,
    now: Timestamp,
) -> Result<Vec<AlertRecord>> {
    let mut tx = write_tx(writer).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut alert = read_one(&mut tx, tenant_id, id)
            .await?
            .filter(|a| scope.allows(a.rbac_group_id))
            .ok_or_else(|| Error::alert_not_found(id))?;
        alert.apply(change, actor, now)?;
        sqlx::query(
            "UPDATE alerts SET status = ?, assigned_to = ?, classification = ?, \
                 determination = ?, resolved = ?, last_update = ?, comments = ? \
             WHERE tenant_id = ? AND id = ?",
        )
        .bind(&alert.status)
        .bind(&alert.assigned_to)
        .bind(&alert.classification)
        .bind(&alert.determination)
        .bind(alert.resolved.map(Timestamp::ticks))
        .bind(now.ticks())
        .bind(to_json(&alert.comments)?)
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot update an alert"))?;
        audit_log::append(&mut tx, &change.audit_event(tenant_id, id, actor, now)).await?;
        out.push(alert);
    }
    commit(tx).await?;
    Ok(out)
}

/// Retention: deletes at most `limit` alerts last updated before `before`, oldest first.
pub(super) async fn delete_old(writer: &SqlitePool, before: Timestamp, limit: u32) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM alerts WHERE seq IN \
         (SELECT seq FROM alerts WHERE last_update < ? ORDER BY last_update LIMIT ?)",
    )
    .bind(before.ticks())
    .bind(i64::from(limit))
    .execute(writer)
    .await
    .map_err(db_err("cannot delete old alerts"))?;
    Ok(done.rows_affected())
}

/// Onboarded machines whose agent reports them restricted and that have not checked in
/// since `last_seen_before`, without an alert for this silence yet; at most `limit`.
pub(super) async fn silent_restricted(
    reader: &SqlitePool,
    last_seen_before: Timestamp,
    limit: u32,
) -> Result<Vec<MachineRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines m \
         WHERE offboarded IS NULL AND last_seen < ? \
           AND json_extract(enforcement, '$.restricted') = 1 \
           AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.machine_id = m.id \
               AND a.detector_id = ? AND a.group_key = 'silent:' || m.last_seen) \
         ORDER BY last_seen LIMIT ?"
    ))
    .bind(last_seen_before.ticks())
    .bind(Detector::AgentSilent.id())
    .bind(i64::from(limit))
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot find silent restricted machines"))?;
    rows.iter().map(rows::machine).collect()
}
