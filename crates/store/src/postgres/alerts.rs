//! Alerts on PostgreSQL: as the SQLite store, with the tenant's alert lock (a
//! transaction-level advisory lock) serialising raises across replicas, so `created`
//! grows in commit order there too.

use appfence_core::alerts::detectors::next_creation_time;
use appfence_core::alerts::{AlertCandidate, AlertChange, AlertRecord, Detector};
use appfence_core::odata::{AlertField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::MachineRecord;
use appfence_core::{Error, Result};
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};

use super::list::{self, Collection};
use super::machines::MACHINE_COLUMNS;
use super::{audit_log, begin, commit, ctx, read, retry, Fail, PgResult};
use crate::alert_columns;
use crate::rows::{self, to_json, ALERT_COLUMNS, ALERT_COLUMNS_NO_EVIDENCE};

const WHAT: &str = "cannot list alerts";

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

/// Raises or folds each candidate inside the caller's transaction, holding the
/// tenant's alert lock until it commits; returns how many alerts are new.
pub(super) async fn raise_in(
    conn: &mut PgConnection,
    tenant_id: &str,
    candidates: &[AlertCandidate],
    now: Timestamp,
) -> PgResult<usize> {
    if candidates.is_empty() {
        return Ok(0);
    }
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('appfence-alerts:' || $1, 0))")
        .bind(tenant_id)
        .execute(&mut *conn)
        .await
        .map_err(ctx("cannot take the tenant's alert lock"))?;
    let mut created = 0;
    // `Some(newest)` once read (`Some(None)`: the tenant has no alert yet).
    let mut newest: Option<Option<Timestamp>> = None;
    for c in candidates {
        let existing = match c.join_since {
            Some(since) => sqlx::query(
                "SELECT seq, first_event, last_event FROM alerts \
                 WHERE machine_id = $1 AND detector_id = $2 AND group_key = $3 \
                   AND status <> 'Resolved' AND last_event >= $4 \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(&c.machine_id)
            .bind(c.detector.id())
            .bind(&c.group_key)
            .bind(since.ticks()),
            None => sqlx::query(
                "SELECT seq, first_event, last_event FROM alerts \
                 WHERE machine_id = $1 AND detector_id = $2 AND group_key = $3 \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(&c.machine_id)
            .bind(c.detector.id())
            .bind(&c.group_key),
        }
        .fetch_optional(&mut *conn)
        .await
        .map_err(ctx("cannot look up an alert to group with"))?;
        if let Some(row) = existing {
            let seq: i64 = row.get("seq");
            let first: i64 = row.get("first_event");
            let last: i64 = row.get("last_event");
            let stored = (Timestamp::from_ticks(first), Timestamp::from_ticks(last));
            if let Some(added) = c.fold_into(stored.0, stored.1) {
                sqlx::query(
                    "UPDATE alerts SET first_event = LEAST(first_event, $1), \
                         last_event = GREATEST(last_event, $2), event_count = event_count + $3, \
                         last_update = $4 WHERE seq = $5",
                )
                .bind(c.first_event.ticks())
                .bind(c.last_event.ticks())
                .bind(added)
                .bind(now.ticks())
                .bind(seq)
                .execute(&mut *conn)
                .await
                .map_err(ctx("cannot update an alert"))?;
            }
            continue;
        }
        // The tenant's newest creation time, read once per transaction.
        let known = match newest {
            Some(n) => n,
            None => sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(created) FROM alerts WHERE tenant_id = $1",
            )
            .bind(tenant_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(ctx("cannot read the newest alert"))?
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
    conn: &mut PgConnection,
    tenant_id: &str,
    c: &AlertCandidate,
    created: Timestamp,
    now: Timestamp,
) -> PgResult<()> {
    let mitre: Vec<&str> = c.detector.mitre_techniques().to_vec();
    sqlx::query(
        "INSERT INTO alerts (id, tenant_id, machine_id, detector_id, group_key, title, \
             description, category, severity, detection_source, threat_name, \
             mitre_techniques, status, created, first_event, last_event, last_update, \
             event_count, related_user, comments, evidence) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'New', $13, $14, $15, \
             $16, $17, $18, '[]', $19)",
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
    .map_err(ctx("cannot store an alert"))?;
    Ok(())
}

pub(super) async fn raise(
    pool: &PgPool,
    tenant_id: &str,
    candidates: &[AlertCandidate],
    now: Timestamp,
) -> Result<usize> {
    if candidates.is_empty() {
        return Ok(0);
    }
    retry(|| async {
        let mut tx = begin(pool).await?;
        let created = raise_in(&mut tx, tenant_id, candidates, now).await?;
        commit(tx).await?;
        Ok(created)
    })
    .await
}

pub(super) async fn list(
    pool: &PgPool,
    tenant_id: &str,
    scope: &DeviceScope,
    query: &Query<AlertField>,
) -> Result<Page<AlertRecord>> {
    let c = if query.expands("evidence") {
        &WITH_EVIDENCE
    } else {
        &WITHOUT_EVIDENCE
    };
    list::page(pool, c, tenant_id, scope, query, rows::alert).await
}

async fn read_one(
    conn: &mut PgConnection,
    tenant_id: &str,
    id: &str,
    lock: bool,
) -> PgResult<Option<AlertRecord>> {
    // The view joins machines; lock the alert's own row.
    let sql = if lock {
        format!(
            "SELECT {ALERT_COLUMNS} FROM alert_rows WHERE tenant_id = $1 AND id = $2 \
             AND seq = (SELECT seq FROM alerts WHERE tenant_id = $1 AND id = $2 FOR UPDATE)"
        )
    } else {
        format!("SELECT {ALERT_COLUMNS} FROM alert_rows WHERE tenant_id = $1 AND id = $2")
    };
    let row = sqlx::query(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(ctx("cannot read an alert"))?;
    Ok(row.as_ref().map(rows::alert).transpose()?)
}

pub(super) async fn get(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
    scope: &DeviceScope,
) -> Result<Option<AlertRecord>> {
    read(async {
        let mut conn = pool.acquire().await.map_err(ctx("cannot read an alert"))?;
        Ok(read_one(&mut conn, tenant_id, id, false)
            .await?
            .filter(|a| scope.allows(a.rbac_group_id)))
    })
    .await
}

/// As the SQLite store: all or nothing, audited in the same transaction.
pub(super) async fn update(
    pool: &PgPool,
    tenant_id: &str,
    ids: &[String],
    change: &AlertChange,
    scope: &DeviceScope,
    actor: &str,
    now: Timestamp,
) -> Result<Vec<AlertRecord>> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let mut alert = read_one(&mut tx, tenant_id, id, true)
                .await?
                .filter(|a| scope.allows(a.rbac_group_id))
                .ok_or_else(|| Fail::App(Error::alert_not_found(id)))?;
            alert.apply(change, actor, now)?;
            sqlx::query(
                "UPDATE alerts SET status = $1, assigned_to = $2, classification = $3, \
                     determination = $4, resolved = $5, last_update = $6, comments = $7 \
                 WHERE tenant_id = $8 AND id = $9",
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
            .map_err(ctx("cannot update an alert"))?;
            audit_log::append(&mut tx, &change.audit_event(tenant_id, id, actor, now)).await?;
            out.push(alert);
        }
        commit(tx).await?;
        Ok(out)
    })
    .await
}

pub(super) async fn delete_old(pool: &PgPool, before: Timestamp, limit: u32) -> Result<u64> {
    retry(|| async {
        let done = sqlx::query(
            "DELETE FROM alerts WHERE seq IN \
             (SELECT seq FROM alerts WHERE last_update < $1 ORDER BY last_update LIMIT $2)",
        )
        .bind(before.ticks())
        .bind(i64::from(limit))
        .execute(pool)
        .await
        .map_err(ctx("cannot delete old alerts"))?;
        Ok(done.rows_affected())
    })
    .await
}

pub(super) async fn silent_restricted(
    pool: &PgPool,
    last_seen_before: Timestamp,
    limit: u32,
) -> Result<Vec<MachineRecord>> {
    read(async {
        let rows = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines m \
             WHERE offboarded IS NULL AND last_seen < $1 \
               AND (enforcement->>'restricted')::boolean \
               AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.machine_id = m.id \
                   AND a.detector_id = $2 AND a.group_key = 'silent:' || m.last_seen) \
             ORDER BY last_seen LIMIT $3"
        ))
        .bind(last_seen_before.ticks())
        .bind(Detector::AgentSilent.id())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot find silent restricted machines"))?;
        Ok(rows.iter().map(rows::machine).collect::<Result<Vec<_>>>()?)
    })
    .await
}
