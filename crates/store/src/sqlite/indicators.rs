//! Indicators and the per-tenant allowlist version: every change of a tenant's
//! indicators bumps its version in the same transaction, so an agent that sees the
//! version change and fetches the allowlist always gets the change.

use appfence_core::authz::IndicatorScope;
use appfence_core::indicators::{
    compile_policy, ProtectedHit, MAX_ACTIVE_INDICATORS, TYPE_FILE_SHA256,
};
use appfence_core::odata::{IndicatorField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{IndicatorRecord, IndicatorSubmission};
use appfence_core::{Error, Result};
use appfence_proto::agent::AllowlistResponse;
use appfence_proto::Timestamp;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::list::{self, Collection};
use super::rows::{self, INDICATOR_COLUMNS};
use super::{commit, db_err, write_tx};
use crate::odata_sql::{Column, SortKey};
use crate::rows::to_json;
use appfence_core::odata::Direction;

fn column(f: IndicatorField) -> Column {
    match f {
        IndicatorField::Id => Column::Int("id"),
        IndicatorField::IndicatorValue => Column::NoCaseText("indicator_value"),
        IndicatorField::IndicatorType => Column::Text("indicator_type"),
        IndicatorField::Action => Column::Text("action"),
        IndicatorField::Application => Column::Text("application"),
        IndicatorField::Title => Column::Text("title"),
        IndicatorField::Severity => Column::Text("severity"),
        IndicatorField::CreatedBy => Column::NoCaseText("created_by"),
        IndicatorField::CreatedByDisplayName => Column::NoCaseText("source"),
        IndicatorField::CreationTimeDateTimeUtc => Column::Int("created"),
        IndicatorField::ExpirationTime => Column::Int("expiration_time"),
        IndicatorField::LastUpdateTime => Column::Int("last_update"),
    }
}

const COLLECTION: Collection<IndicatorField> = Collection {
    table: "indicators",
    columns: INDICATOR_COLUMNS,
    column,
    default_order: "created DESC, id DESC",
    default_keys: &[
        SortKey {
            col: Column::Int("created"),
            dir: Direction::Desc,
            nullable: false,
        },
        SortKey {
            col: Column::Int("id"),
            dir: Direction::Desc,
            nullable: false,
        },
    ],
    tiebreak_key: SortKey {
        col: Column::Int("id"),
        dir: Direction::Desc,
        nullable: false,
    },
    nullable: &["application", "expiration_time"],
    implied: &[],
    what: "indicators",
    // Indicators apply to the whole tenant; callers always pass `DeviceScope::All`.
    device_group: "0",
};

/// Bumps the tenant's allowlist version inside `tx`.
pub(super) async fn bump_version(tx: &mut SqliteConnection, tenant_id: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO allowlist_versions (tenant_id, version) VALUES (?, 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET version = version + 1",
    )
    .bind(tenant_id)
    .execute(tx)
    .await
    .map_err(db_err("cannot bump the allowlist version"))?;
    Ok(())
}

async fn find(
    tx: &mut SqliteConnection,
    tenant_id: &str,
    indicator_type: &str,
    value: &str,
) -> Result<Option<IndicatorRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {INDICATOR_COLUMNS} FROM indicators \
         WHERE tenant_id = ? AND indicator_type = ? AND indicator_value = ?"
    ))
    .bind(tenant_id)
    .bind(indicator_type)
    .bind(value)
    .fetch_optional(tx)
    .await
    .map_err(db_err("cannot read an indicator"))?;
    row.as_ref().map(rows::indicator).transpose()
}

fn in_scope(scope: &IndicatorScope, i: &IndicatorRecord) -> bool {
    match scope {
        IndicatorScope::All => true,
        IndicatorScope::CreatedBy(who) => i.created_by.eq_ignore_ascii_case(who),
    }
}

pub(super) async fn submit_many(
    writer: &SqlitePool,
    submissions: &[IndicatorSubmission],
    scope: &IndicatorScope,
) -> Result<Vec<Result<IndicatorRecord>>> {
    let mut tx = write_tx(writer).await?;
    let mut outcomes = Vec::with_capacity(submissions.len());
    let mut stored_any = false;
    for s in submissions {
        let outcome = submit_one(&mut tx, s, scope).await;
        // A refusal of this one leaves the others; a store failure ends them all.
        match outcome {
            Err(e @ (Error::Forbidden(_) | Error::BadRequest(_))) => outcomes.push(Err(e)),
            Err(e) => return Err(e),
            Ok(stored) => {
                stored_any = true;
                outcomes.push(Ok(stored));
            }
        }
    }
    if let Some(first) = submissions.first().filter(|_| stored_any) {
        bump_version(&mut tx, &first.tenant_id).await?;
    }
    commit(tx).await?;
    Ok(outcomes)
}

async fn submit_one(
    tx: &mut SqliteConnection,
    s: &IndicatorSubmission,
    scope: &IndicatorScope,
) -> Result<IndicatorRecord> {
    let existing = find(tx, &s.tenant_id, &s.indicator_type, &s.indicator_value).await?;
    match &existing {
        Some(current) if !in_scope(scope, current) => {
            return Err(Error::Forbidden(format!(
                "Indicator {} was submitted by another application; changing it requires \
                 the application role Ti.ReadWrite.All",
                current.id
            )))
        }
        Some(current) => {
            sqlx::query(
                "UPDATE indicators SET action = ?, title = ?, description = ?, \
                     recommended_actions = ?, severity = ?, expiration_time = ?, \
                     generate_alert = ?, last_update = ?, last_updated_by = ?, \
                     rbac_group_names = ?, rbac_group_ids = ? \
                 WHERE id = ?",
            )
            .bind(&s.action)
            .bind(&s.title)
            .bind(&s.description)
            .bind(&s.recommended_actions)
            .bind(&s.severity)
            .bind(s.expiration_time.map(Timestamp::ticks))
            .bind(s.generate_alert)
            .bind(s.at.ticks())
            .bind(&s.submitter_name)
            .bind(to_json(&s.rbac_group_names)?)
            .bind(to_json(&s.rbac_group_ids)?)
            .bind(current.id)
            .execute(&mut *tx)
            .await
            .map_err(db_err("cannot update an indicator"))?;
        }
        None => {
            let (active,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM indicators WHERE tenant_id = ? \
                 AND (expiration_time IS NULL OR expiration_time > ?)",
            )
            .bind(&s.tenant_id)
            .bind(s.at.ticks())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("cannot count indicators"))?;
            if active as u64 >= MAX_ACTIVE_INDICATORS {
                return Err(Error::BadRequest(format!(
                    "The tenant already has {MAX_ACTIVE_INDICATORS} active indicators, the most allowed"
                )));
            }
            sqlx::query(
                "INSERT INTO indicators (tenant_id, indicator_value, indicator_type, action, \
                     application, source, source_type, created_by, title, description, \
                     recommended_actions, severity, expiration_time, generate_alert, created, \
                     last_update, last_updated_by, rbac_group_names, rbac_group_ids) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            )
            .bind(&s.tenant_id)
            .bind(&s.indicator_value)
            .bind(&s.indicator_type)
            .bind(&s.action)
            .bind(&s.application)
            .bind(&s.submitter_name)
            .bind(&s.source_type)
            .bind(&s.submitted_by)
            .bind(&s.title)
            .bind(&s.description)
            .bind(&s.recommended_actions)
            .bind(&s.severity)
            .bind(s.expiration_time.map(Timestamp::ticks))
            .bind(s.generate_alert)
            .bind(s.at.ticks())
            .bind(s.at.ticks())
            .bind(to_json(&s.rbac_group_names)?)
            .bind(to_json(&s.rbac_group_ids)?)
            .execute(&mut *tx)
            .await
            .map_err(db_err("cannot insert an indicator"))?;
        }
    }
    find(tx, &s.tenant_id, &s.indicator_type, &s.indicator_value)
        .await?
        .ok_or_else(|| Error::Internal("a submitted indicator is not in the store".into()))
}

pub(super) async fn list(
    reader: &SqlitePool,
    tenant_id: &str,
    query: &Query<IndicatorField>,
) -> Result<Page<IndicatorRecord>> {
    list::page(
        reader,
        &COLLECTION,
        tenant_id,
        &DeviceScope::All,
        query,
        rows::indicator,
    )
    .await
}

pub(super) async fn delete(
    writer: &SqlitePool,
    tenant_id: &str,
    id: i64,
    scope: &IndicatorScope,
) -> Result<bool> {
    let mut tx = write_tx(writer).await?;
    let row = sqlx::query(&format!(
        "SELECT {INDICATOR_COLUMNS} FROM indicators WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err("cannot read an indicator"))?;
    let Some(current) = row.as_ref().map(rows::indicator).transpose()? else {
        return Ok(false);
    };
    // Another application's indicator is "not found" for an application that may see
    // only its own, as in a list.
    if !in_scope(scope, &current) {
        return Ok(false);
    }
    sqlx::query("DELETE FROM indicators WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot delete an indicator"))?;
    bump_version(&mut tx, tenant_id).await?;
    commit(tx).await?;
    Ok(true)
}

pub(super) async fn delete_expired(writer: &SqlitePool, now: Timestamp) -> Result<usize> {
    let mut tx = write_tx(writer).await?;
    let tenants: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT tenant_id FROM indicators \
         WHERE expiration_time IS NOT NULL AND expiration_time <= ?",
    )
    .bind(now.ticks())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err("cannot find expired indicators"))?;
    if tenants.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "DELETE FROM indicators WHERE expiration_time IS NOT NULL AND expiration_time <= ?",
    )
    .bind(now.ticks())
    .execute(&mut *tx)
    .await
    .map_err(db_err("cannot delete expired indicators"))?;
    for (tenant_id,) in &tenants {
        bump_version(&mut tx, tenant_id).await?;
    }
    commit(tx).await?;
    Ok(done.rows_affected() as usize)
}

async fn version_in(tx: &mut SqliteConnection, tenant_id: &str) -> Result<u64> {
    let v: Option<(i64,)> =
        sqlx::query_as("SELECT version FROM allowlist_versions WHERE tenant_id = ?")
            .bind(tenant_id)
            .fetch_optional(tx)
            .await
            .map_err(db_err("cannot read the allowlist version"))?;
    Ok(v.map_or(0, |(v,)| v as u64))
}

pub(super) async fn version(reader: &SqlitePool, tenant_id: &str) -> Result<u64> {
    let mut conn = reader
        .acquire()
        .await
        .map_err(db_err("cannot read the allowlist version"))?;
    version_in(&mut conn, tenant_id).await
}

pub(super) async fn allowlist(
    reader: &SqlitePool,
    tenant_id: &str,
    rbac_group_id: i64,
    now: Timestamp,
) -> Result<AllowlistResponse> {
    // One read transaction: the version and the indicators come from the same snapshot.
    let mut tx = reader
        .begin()
        .await
        .map_err(db_err("cannot begin a read"))?;
    let version = version_in(&mut tx, tenant_id).await?;
    let found = sqlx::query(&format!(
        "SELECT {INDICATOR_COLUMNS} FROM indicators WHERE tenant_id = ? AND indicator_type = ? \
         AND (expiration_time IS NULL OR expiration_time > ?)"
    ))
    .bind(tenant_id)
    .bind(TYPE_FILE_SHA256)
    .bind(now.ticks())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err("cannot read the file policy"))?;
    tx.rollback().await.map_err(db_err("cannot end a read"))?;
    let indicators = found
        .iter()
        .map(rows::indicator)
        .collect::<Result<Vec<_>>>()?;
    Ok(compile_policy(version, &indicators, rbac_group_id, now))
}

pub(super) async fn protected_files(
    reader: &SqlitePool,
    tenant_id: &str,
) -> Result<Vec<ProtectedHit>> {
    let found: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT m.id, m.computer_dns_name, p.value FROM machines m, \
             json_each(m.enforcement, '$.protected') p \
         WHERE m.tenant_id = ?",
    )
    .bind(tenant_id)
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot read the protected files"))?;
    found
        .into_iter()
        .map(|(machine_id, computer_dns_name, file)| {
            Ok(ProtectedHit {
                machine_id,
                computer_dns_name,
                file: serde_json::from_str(&file).map_err(|e| {
                    Error::Internal(format!("a stored protected file does not decode: {e}"))
                })?,
            })
        })
        .collect()
}
