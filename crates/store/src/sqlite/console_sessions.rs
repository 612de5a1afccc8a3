//! Signed-in sessions of the web console. Each operation is one statement, so the
//! writes are autocommit statements on the writer, like the other simple writes; the
//! rule of a session that is over is `ConsoleSession::is_over`'s, in SQL.

use std::time::Duration;

use appfence_core::records::ConsoleSession;
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::sqlite::SqlitePool;

use super::{db_err, rows};

const COLUMNS: &str =
    "id_sha256, tenant_id, user_object_id, upn, groups, issuer, created, last_seen, expires";

/// Fails (rather than replacing it) if a session with this hash exists: a session is
/// never handed to a second sign-in.
pub(super) async fn insert(writer: &SqlitePool, s: &ConsoleSession) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO console_sessions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&s.id_sha256)
    .bind(&s.tenant_id)
    .bind(&s.user_object_id)
    .bind(&s.upn)
    .bind(rows::to_json(&s.groups)?)
    .bind(&s.issuer)
    .bind(s.created.ticks())
    .bind(s.last_seen.ticks())
    .bind(s.expires.ticks())
    .execute(writer)
    .await
    .map_err(db_err("cannot insert a console session"))?;
    Ok(())
}

pub(super) async fn get(reader: &SqlitePool, id_sha256: &str) -> Result<Option<ConsoleSession>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM console_sessions WHERE id_sha256 = ?"
    ))
    .bind(id_sha256)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read a console session"))?;
    row.as_ref().map(crate::rows::console_session).transpose()
}

/// `last_seen` only moves forward: a request that reaches the store late (another
/// replica's, or one with a clock a little behind) does not make the session look idle
/// sooner.
pub(super) async fn touch(writer: &SqlitePool, id_sha256: &str, at: Timestamp) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE console_sessions SET last_seen = MAX(last_seen, ?) WHERE id_sha256 = ?",
    )
    .bind(at.ticks())
    .bind(id_sha256)
    .execute(writer)
    .await
    .map_err(db_err("cannot touch a console session"))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn delete(writer: &SqlitePool, id_sha256: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM console_sessions WHERE id_sha256 = ?")
        .bind(id_sha256)
        .execute(writer)
        .await
        .map_err(db_err("cannot delete a console session"))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn delete_of_user(
    writer: &SqlitePool,
    tenant_id: &str,
    user_object_id: &str,
) -> Result<u64> {
    let done =
        sqlx::query("DELETE FROM console_sessions WHERE tenant_id = ? AND user_object_id = ?")
            .bind(tenant_id)
            .bind(user_object_id)
            .execute(writer)
            .await
            .map_err(db_err("cannot delete a user's console sessions"))?;
    Ok(done.rows_affected())
}

pub(super) async fn count_of_user(
    reader: &SqlitePool,
    tenant_id: &str,
    user_object_id: &str,
) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM console_sessions WHERE tenant_id = ? AND user_object_id = ?",
    )
    .bind(tenant_id)
    .bind(user_object_id)
    .fetch_one(reader)
    .await
    .map_err(db_err("cannot count a user's console sessions"))?;
    Ok(n.max(0) as u64)
}

pub(super) async fn prune(writer: &SqlitePool, now: Timestamp, idle: Duration) -> Result<u64> {
    let done = sqlx::query("DELETE FROM console_sessions WHERE expires <= ? OR last_seen <= ?")
        .bind(now.ticks())
        .bind(ConsoleSession::idle_cutoff(now, idle).ticks())
        .execute(writer)
        .await
        .map_err(db_err("cannot prune console sessions"))?;
    Ok(done.rows_affected())
}
