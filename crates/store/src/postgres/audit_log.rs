//! The audit log of security events (`audit_events`, append-only by trigger).

use appfence_core::audit::AuditEvent;
use appfence_core::Result;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::{commit, ctx, read, retry, PgResult};
use crate::rows;

/// Appends `event` inside a transaction, so it commits with the change it records.
pub(super) async fn append(
    tx: &mut Transaction<'static, Postgres>,
    event: &AuditEvent,
) -> PgResult<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, tenant_id, event, subject, actor, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.at.ticks())
    .bind(&event.tenant_id)
    .bind(&event.event)
    .bind(&event.subject)
    .bind(&event.actor)
    .bind(&event.detail)
    .execute(&mut **tx)
    .await
    .map_err(ctx("cannot append to the audit log"))?;
    Ok(())
}

pub(super) async fn append_alone(pool: &PgPool, event: &AuditEvent) -> Result<()> {
    retry(|| async {
        let mut tx = super::begin(pool).await?;
        append(&mut tx, event).await?;
        commit(tx).await
    })
    .await
}

pub(super) async fn list(pool: &PgPool, after: i64, limit: u32) -> Result<Vec<(i64, AuditEvent)>> {
    read(async {
        let found = sqlx::query(
            "SELECT seq, at, tenant_id, event, subject, actor, detail FROM audit_events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot read the audit log"))?;
        Ok(found
            .iter()
            .map(rows::audit_event)
            .collect::<Result<Vec<_>>>()?)
    })
    .await
}
