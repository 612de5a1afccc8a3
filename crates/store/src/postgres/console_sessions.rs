//! Signed-in sessions of the web console, shared by every replica. Each operation is
//! one statement, so nothing is locked beyond it; the rule of a session that is over is
//! `ConsoleSession::is_over`'s, in SQL.

use std::time::Duration;

use appfence_core::records::ConsoleSession;
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;

use super::{ctx, read, retry};
use crate::rows::{self, to_json};

const COLUMNS: &str = "id_sha256, tenant_id, user_object_id, upn, groups::text AS groups, \
     issuer, created, last_seen, expires";

/// Fails (rather than replacing it) if a session with this hash exists: a session is
/// never handed to a second sign-in.
pub(super) async fn insert(pool: &PgPool, s: &ConsoleSession) -> Result<()> {
    let groups = to_json(&s.groups)?;
    retry(|| async {
        sqlx::query(
            "INSERT INTO console_sessions (id_sha256, tenant_id, user_object_id, upn, groups, \
             issuer, created, last_seen, expires) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9)",
        )
        .bind(&s.id_sha256)
        .bind(&s.tenant_id)
        .bind(&s.user_object_id)
        .bind(&s.upn)
        .bind(&groups)
        .bind(&s.issuer)
        .bind(s.created.ticks())
        .bind(s.last_seen.ticks())
        .bind(s.expires.ticks())
        .execute(pool)
        .await
        .map_err(ctx("cannot insert a console session"))?;
        Ok(())
    })
    .await
}

pub(super) async fn get(pool: &PgPool, id_sha256: &str) -> Result<Option<ConsoleSession>> {
    read(async {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM console_sessions WHERE id_sha256 = $1"
        ))
        .bind(id_sha256)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read a console session"))?;
        Ok(row.as_ref().map(rows::console_session).transpose()?)
    })
    .await
}

/// `last_seen` only moves forward: a request that reaches the database late (another
/// replica's, or one whose clock is a little behind) does not make the session look
/// idle sooner.
pub(super) async fn touch(pool: &PgPool, id_sha256: &str, at: Timestamp) -> Result<bool> {
    retry(|| async {
        let done = sqlx::query(
            "UPDATE console_sessions SET last_seen = GREATEST(last_seen, $1) WHERE id_sha256 = $2",
        )
        .bind(at.ticks())
        .bind(id_sha256)
        .execute(pool)
        .await
        .map_err(ctx("cannot touch a console session"))?;
        Ok(done.rows_affected() == 1)
    })
    .await
}

pub(super) async fn delete(pool: &PgPool, id_sha256: &str) -> Result<bool> {
    retry(|| async {
        let done = sqlx::query("DELETE FROM console_sessions WHERE id_sha256 = $1")
            .bind(id_sha256)
            .execute(pool)
            .await
            .map_err(ctx("cannot delete a console session"))?;
        Ok(done.rows_affected() == 1)
    })
    .await
}

pub(super) async fn delete_of_user(
    pool: &PgPool,
    tenant_id: &str,
    user_object_id: &str,
) -> Result<u64> {
    retry(|| async {
        let done = sqlx::query(
            "DELETE FROM console_sessions WHERE tenant_id = $1 AND user_object_id = $2",
        )
        .bind(tenant_id)
        .bind(user_object_id)
        .execute(pool)
        .await
        .map_err(ctx("cannot delete a user's console sessions"))?;
        Ok(done.rows_affected())
    })
    .await
}

pub(super) async fn count_of_user(
    pool: &PgPool,
    tenant_id: &str,
    user_object_id: &str,
) -> Result<u64> {
    read(async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM console_sessions WHERE tenant_id = $1 AND user_object_id = $2",
        )
        .bind(tenant_id)
        .bind(user_object_id)
        .fetch_one(pool)
        .await
        .map_err(ctx("cannot count a user's console sessions"))?;
        Ok(n.max(0) as u64)
    })
    .await
}

pub(super) async fn prune(pool: &PgPool, now: Timestamp, idle: Duration) -> Result<u64> {
    let idle_cutoff = ConsoleSession::idle_cutoff(now, idle);
    retry(|| async {
        let done =
            sqlx::query("DELETE FROM console_sessions WHERE expires <= $1 OR last_seen <= $2")
                .bind(now.ticks())
                .bind(idle_cutoff.ticks())
                .execute(pool)
                .await
                .map_err(ctx("cannot prune console sessions"))?;
        Ok(done.rows_affected())
    })
    .await
}
