//! The audit log of security events (`audit_events`, append-only by trigger).

use appfence_core::audit::AuditEvent;
use appfence_core::Result;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::{commit, db_err, write_tx};

/// Appends `event` inside a write transaction (or savepoint), so it commits with the
/// change it records.
pub(super) async fn append(conn: &mut SqliteConnection, event: &AuditEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, tenant_id, event, subject, actor, detail) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(event.at.ticks())
    .bind(&event.tenant_id)
    .bind(&event.event)
    .bind(&event.subject)
    .bind(&event.actor)
    .bind(&event.detail)
    .execute(&mut *conn)
    .await
    .map_err(db_err("cannot append to the audit log"))?;
    Ok(())
}

pub(super) async fn append_alone(writer: &SqlitePool, event: &AuditEvent) -> Result<()> {
    let mut tx = write_tx(writer).await?;
    append(&mut tx, event).await?;
    commit(tx).await
}

pub(super) async fn list(
    reader: &SqlitePool,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, AuditEvent)>> {
    let rows = sqlx::query(
        "SELECT seq, at, tenant_id, event, subject, actor, detail FROM audit_events \
         WHERE seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot read the audit log"))?;
    rows.iter().map(crate::rows::audit_event).collect()
}
