//! Indicators and the per-tenant allowlist version: every change of a tenant's
//! indicators bumps its version in the same transaction. The version row is taken
//! first, so one tenant's indicator writes are serialised across replicas (and the
//! limit of active indicators holds exactly).

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
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::list::{self, Collection};
use super::{begin, commit, ctx, read, retry, Fail, PgResult};
use crate::odata_sql::{Column, SortKey};
use crate::rows::{self, to_json, INDICATOR_COLUMNS};
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
    what: "cannot list indicators",
    device_group: "0",
};

/// Bumps the tenant's allowlist version, taking its row lock for the transaction.
pub(super) async fn bump_version(
    tx: &mut Transaction<'static, Postgres>,
    tenant_id: &str,
) -> PgResult<()> {
    sqlx::query(
        "INSERT INTO allowlist_versions (tenant_id, version) VALUES ($1, 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET version = allowlist_versions.version + 1",
    )
    .bind(tenant_id)
    .execute(&mut **tx)
    .await
    .map_err(ctx("cannot bump the allowlist version"))?;
    Ok(())
}

async fn find(
    tx: &mut Transaction<'static, Postgres>,
    tenant_id: &str,
    indicator_type: &str,
    value: &str,
) -> PgResult<Option<IndicatorRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {INDICATOR_COLUMNS} FROM indicators \
         WHERE tenant_id = $1 AND indicator_type = $2 AND indicator_value = $3"
    ))
    .bind(tenant_id)
    .bind(indicator_type)
    .bind(value)
    .fetch_optional(&mut **tx)
    .await
    .map_err(ctx("cannot read an indicator"))?;
    Ok(row.as_ref().map(rows::indicator).transpose()?)
}

fn in_scope(scope: &IndicatorScope, i: &IndicatorRecord) -> bool {
    match scope {
        IndicatorScope::All => true,
        IndicatorScope::CreatedBy(who) => i.created_by.eq_ignore_ascii_case(who),
    }
}

pub(super) async fn submit_many(
    pool: &PgPool,
    submissions: &[IndicatorSubmission],
    scope: &IndicatorScope,
) -> Result<Vec<Result<IndicatorRecord>>> {
    let Some(first) = submissions.first() else {
        return Ok(Vec::new());
    };
    retry(|| async {
        let mut tx = begin(pool).await?;
        // Taken first: serialises the tenant's indicator writes (and its limit).
        bump_version(&mut tx, &first.tenant_id).await?;
        let mut outcomes = Vec::with_capacity(submissions.len());
        let mut stored_any = false;
        for s in submissions {
            match submit_one(&mut tx, s, scope).await {
                // A refusal of this one leaves the others; a store failure ends them all.
                Err(Fail::App(e @ (Error::Forbidden(_) | Error::BadRequest(_)))) => {
                    outcomes.push(Err(e))
                }
                Err(e) => return Err(e),
                Ok(stored) => {
                    stored_any = true;
                    outcomes.push(Ok(stored));
                }
            }
        }
        if stored_any {
            commit(tx).await?;
        } else {
            // Nothing stored: the version stays.
            tx.rollback()
                .await
                .map_err(ctx("cannot end a transaction"))?;
        }
        Ok(outcomes)
    })
    .await
}

async fn submit_one(
    tx: &mut Transaction<'static, Postgres>,
    s: &IndicatorSubmission,
    scope: &IndicatorScope,
) -> PgResult<IndicatorRecord> {
    let existing = find(tx, &s.tenant_id, &s.indicator_type, &s.indicator_value).await?;
    match &existing {
        Some(current) if !in_scope(scope, current) => {
            return Err(Fail::App(Error::Forbidden(format!(
                "Indicator {} was submitted by another application; changing it requires \
                 the application role Ti.ReadWrite.All",
                current.id
            ))))
        }
        Some(current) => {
            sqlx::query(
                "UPDATE indicators SET action = $1, title = $2, description = $3, \
                     recommended_actions = $4, severity = $5, expiration_time = $6, \
                     generate_alert = $7, last_update = $8, last_updated_by = $9, \
                     rbac_group_names = $10, rbac_group_ids = $11 \
                 WHERE id = $12",
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
            .execute(&mut **tx)
            .await
            .map_err(ctx("cannot update an indicator"))?;
        }
        None => {
            let active: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM indicators WHERE tenant_id = $1 \
                 AND (expiration_time IS NULL OR expiration_time > $2)",
            )
            .bind(&s.tenant_id)
            .bind(s.at.ticks())
            .fetch_one(&mut **tx)
            .await
            .map_err(ctx("cannot count indicators"))?;
            if active as u64 >= MAX_ACTIVE_INDICATORS {
                return Err(Fail::App(Error::BadRequest(format!(
                    "The tenant already has {MAX_ACTIVE_INDICATORS} active indicators, the most allowed"
                ))));
            }
            sqlx::query(
                "INSERT INTO indicators (tenant_id, indicator_value, indicator_type, action, \
                     application, source, source_type, created_by, title, description, \
                     recommended_actions, severity, expiration_time, generate_alert, created, \
                     last_update, last_updated_by, rbac_group_names, rbac_group_ids) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, \
                     NULL, $16, $17)",
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
            .bind(to_json(&s.rbac_group_names)?)
            .bind(to_json(&s.rbac_group_ids)?)
            .execute(&mut **tx)
            .await
            .map_err(ctx("cannot insert an indicator"))?;
        }
    }
    find(tx, &s.tenant_id, &s.indicator_type, &s.indicator_value)
        .await?
        .ok_or_else(|| {
            Fail::App(Error::Internal(
                "a submitted indicator is not in the store".into(),
            ))
        })
}

pub(super) async fn list(
    pool: &PgPool,
    tenant_id: &str,
    query: &Query<IndicatorField>,
) -> Result<Page<IndicatorRecord>> {
    list::page(
        pool,
        &COLLECTION,
        tenant_id,
        &DeviceScope::All,
        query,
        rows::indicator,
    )
    .await
}

pub(super) async fn delete(
    pool: &PgPool,
    tenant_id: &str,
    id: i64,
    scope: &IndicatorScope,
) -> Result<bool> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let row = sqlx::query(&format!(
            "SELECT {INDICATOR_COLUMNS} FROM indicators WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("cannot read an indicator"))?;
        let Some(current) = row.as_ref().map(rows::indicator).transpose()? else {
            return Ok(false);
        };
        if !in_scope(scope, &current) {
            return Ok(false);
        }
        sqlx::query("DELETE FROM indicators WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot delete an indicator"))?;
        bump_version(&mut tx, tenant_id).await?;
        commit(tx).await?;
        Ok(true)
    })
    .await
}

pub(super) async fn delete_expired(pool: &PgPool, now: Timestamp) -> Result<usize> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM indicators WHERE expiration_time IS NOT NULL AND expiration_time <= $1 \
             RETURNING tenant_id",
        )
        .bind(now.ticks())
        .fetch_all(&mut *tx)
        .await
        .map_err(ctx("cannot delete expired indicators"))?;
        let mut tenants = deleted.clone();
        tenants.sort();
        tenants.dedup();
        for tenant_id in &tenants {
            bump_version(&mut tx, tenant_id).await?;
        }
        commit(tx).await?;
        Ok(deleted.len())
    })
    .await
}

async fn version_in(conn: &mut sqlx::PgConnection, tenant_id: &str) -> PgResult<u64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT version FROM allowlist_versions WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(conn)
            .await
            .map_err(ctx("cannot read the allowlist version"))?;
    Ok(v.map_or(0, |v| v as u64))
}

pub(super) async fn version(pool: &PgPool, tenant_id: &str) -> Result<u64> {
    read(async {
        let mut conn = pool
            .acquire()
            .await
            .map_err(ctx("cannot read the allowlist version"))?;
        version_in(&mut conn, tenant_id).await
    })
    .await
}

pub(super) async fn allowlist(
    pool: &PgPool,
    tenant_id: &str,
    rbac_group_id: i64,
    now: Timestamp,
) -> Result<AllowlistResponse> {
    read(async {
        // One snapshot: the version and the indicators agree.
        let mut tx = pool.begin().await.map_err(ctx("cannot begin a read"))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot begin a read"))?;
        let version = version_in(&mut tx, tenant_id).await?;
        let found = sqlx::query(&format!(
            "SELECT {INDICATOR_COLUMNS} FROM indicators WHERE tenant_id = $1 \
             AND indicator_type = $2 AND (expiration_time IS NULL OR expiration_time > $3)"
        ))
        .bind(tenant_id)
        .bind(TYPE_FILE_SHA256)
        .bind(now.ticks())
        .fetch_all(&mut *tx)
        .await
        .map_err(ctx("cannot read the file policy"))?;
        tx.rollback().await.map_err(ctx("cannot end a read"))?;
        let indicators = found
            .iter()
            .map(rows::indicator)
            .collect::<Result<Vec<_>>>()?;
        Ok(compile_policy(version, &indicators, rbac_group_id, now))
    })
    .await
}

pub(super) async fn protected_files(pool: &PgPool, tenant_id: &str) -> Result<Vec<ProtectedHit>> {
    read(async {
        let found: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT m.id, m.computer_dns_name, p.value::text FROM machines m, \
                 jsonb_array_elements(COALESCE(m.enforcement->'protected', '[]'::jsonb)) p \
             WHERE m.tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot read the protected files"))?;
        let hits = found
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
            .collect::<Result<Vec<_>>>()?;
        Ok(hits)
    })
    .await
}
