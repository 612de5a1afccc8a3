//! Rate-limit counters in the database (see the PostgreSQL store's): counted under
//! SQLite's write lock, so exact.

use appfence_core::ratelimit::{decide, window_start, Decision, RateLimitPolicy};
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::sqlite::SqlitePool;

use super::{commit, db_err, write_tx};

pub(super) async fn acquire(
    writer: &SqlitePool,
    key: &str,
    policy: &RateLimitPolicy,
    now: Timestamp,
) -> Result<Decision> {
    let windows = policy.windows();
    let mut tx = write_tx(writer).await?;
    let mut counts = [0u32; 2];
    let mut slots = Vec::with_capacity(2);
    for (i, w) in windows.iter().enumerate() {
        let (k, start) = (format!("{key}|{}", w.name), window_start(now, w.length));
        let calls: Option<i64> =
            sqlx::query_scalar("SELECT calls FROM rate_windows WHERE key = ? AND window_start = ?")
                .bind(&k)
                .bind(start)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err("cannot read a rate-limit counter"))?;
        counts[i] = calls.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32;
        slots.push((k, start));
    }
    let decision = decide(policy, counts, now);
    if decision.admitted {
        for (k, start) in &slots {
            sqlx::query(
                "INSERT INTO rate_windows (key, window_start, calls) VALUES (?, ?, 1) \
                 ON CONFLICT (key, window_start) DO UPDATE SET calls = calls + 1",
            )
            .bind(k)
            .bind(start)
            .execute(&mut *tx)
            .await
            .map_err(db_err("cannot count a call"))?;
        }
    }
    commit(tx).await?;
    Ok(decision)
}

pub(super) async fn prune(writer: &SqlitePool, before: Timestamp) -> Result<u64> {
    let done = sqlx::query("DELETE FROM rate_windows WHERE window_start < ?")
        .bind(before.ticks())
        .execute(writer)
        .await
        .map_err(db_err("cannot prune rate-limit counters"))?;
    Ok(done.rows_affected())
}
